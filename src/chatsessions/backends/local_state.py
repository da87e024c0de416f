"""Per-chat llama.cpp state, so interleaved chats don't re-read their whole history.

One llama.cpp context holds one sequence. When chat B speaks after chat A, the context's
KV cells belong to A and B would be evaluated from scratch. So before switching we copy
A's state out (KV cells + the tokens they hold) into a byte-bounded LRU, and copy B's back
in if we have it; llama.cpp's own prefix matching then evaluates only B's new tokens.

Only the sequence's own cells are copied (llama.cpp's per-sequence state API), so a
switch costs in proportion to the two chats' lengths and touches nothing else of the
context (about 1.3 ms each way for a 555-token chat, 12.8 MB). This reaches below
llama-cpp-python's public API (its ``save_state`` also copies a logits buffer of up to
100 MB, useless here), so any failure turns the cache off rather than risking a wrong
answer.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatsessions._lru import ByteLRU

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

#: llama-cpp-python decodes every batch as sequence 0.
SEQ = 0


@dataclass(frozen=True, slots=True)
class SavedState:
    tokens: Any  # numpy array of the token ids the KV cells hold
    data: Any  # numpy uint8 buffer: llama.cpp's serialized sequence in its first ``size``
    size: int

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes) + int(self.tokens.nbytes)


class StateCache:
    """Which chat the context currently holds, and the saved states of the others."""

    def __init__(self, max_bytes: int) -> None:
        self.enabled = max_bytes > 0
        self.current: str | None = None
        self._saved: ByteLRU[SavedState] = ByteLRU(max_bytes)
        #: the buffer of the state restored last: the chat it held is the one saved next,
        #: a little longer, so its buffer (allocated with room to grow) usually fits it
        #: again; a fresh one costs a page fault per 4 KiB (5-10 ms at 12 MB, loaded)
        self._spare: Any = None
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        return self._saved.max_bytes

    @property
    def nbytes(self) -> int:
        spare = 0 if self._spare is None else int(self._spare.nbytes)
        return self._saved.nbytes + spare

    def switch_to(self, llama: Llama, key: str | None) -> None:
        """Make the context hold ``key``'s state (call on the generation thread)."""
        if not self.enabled or key == self.current:
            if key is not None and self.enabled:
                self.hits += 1
            return
        try:
            if self.current is not None and llama.n_tokens > 0:
                spare, self._spare = self._spare, None
                state = _save(llama, spare)
                if state.nbytes <= self.max_bytes:
                    self._saved.put(self.current, state)
            self.current = key
            if key is None:  # a one-off call: keep the chats' states, cache nothing
                return
            saved = self._saved.pop(key)
            if saved is None:
                self.misses += 1
            else:
                _restore(llama, saved)
                self.hits += 1
                if self._saved.nbytes + saved.data.nbytes <= self.max_bytes:
                    self._spare = saved.data
        except Exception:
            log.exception("per-chat model state disabled after an error")
            self.enabled = False
            self.current = None
            self._saved.clear()
            self._spare = None
            llama.reset()  # type: ignore[no-untyped-call]


def _save(llama: Llama, spare: Any) -> SavedState:
    """Copy out the sequence's KV cells only, into ``spare`` if it is large enough: the
    size follows the chat's length, not ``n_ctx``."""
    import llama_cpp
    import numpy as np

    ctx = llama._ctx.ctx
    size = llama_cpp.llama_state_seq_get_size(ctx, SEQ)
    data = spare
    if data is None or data.nbytes < size:
        data = np.empty(size + size // 4, dtype=np.uint8)  # not zeroed: written over
    if llama_cpp.llama_state_seq_get_data(ctx, _bytes_pointer(data), size, SEQ) != size:
        raise RuntimeError("llama.cpp wrote a short sequence state")
    return SavedState(tokens=llama.input_ids[: llama.n_tokens].copy(), data=data, size=size)


def _restore(llama: Llama, saved: SavedState) -> None:
    """Replace the context's sequence with ``saved``; llama-cpp-python's prefix matching
    then evaluates only the prompt tokens after ``saved.tokens``."""
    import llama_cpp

    ctx = llama._ctx.ctx
    # The other chat's cells must go; llama.cpp's reader removes them too, but its header
    # does not promise it. Removing a whole sequence never fails.
    llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), SEQ, -1, -1)
    size = saved.size
    if llama_cpp.llama_state_seq_set_data(ctx, _bytes_pointer(saved.data), size, SEQ) != size:
        raise RuntimeError("llama.cpp refused the saved state")
    count = len(saved.tokens)
    llama.input_ids[:count] = saved.tokens
    llama.n_tokens = count
    llama._requires_eval = True  # logits are not part of what we restored


def _bytes_pointer(array: Any) -> Any:
    """A ``uint8_t *`` onto a numpy byte array, for llama.cpp to read or write in place."""
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
