"""Per-chat llama.cpp state, so interleaved chats don't re-read their whole history.

One llama.cpp context holds one sequence. When chat B speaks after chat A, the context's
KV cells belong to A and B would be evaluated from scratch. So before switching we copy
A's state out (KV cells + the tokens they hold) into a byte-bounded LRU, and copy B's back
in if we have it; llama.cpp's own prefix matching then evaluates only B's new tokens.

This reaches below llama-cpp-python's public API (its ``save_state`` also copies a
logits buffer of up to 100 MB, useless here), so any failure turns the cache off rather
than risking a wrong answer.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatsessions.cache import ByteLRU

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SavedState:
    tokens: Any  # numpy array of the token ids the KV cells hold
    data: bytes

    @property
    def nbytes(self) -> int:
        return len(self.data) + int(self.tokens.nbytes)


class StateCache:
    """Which chat the context currently holds, and the saved states of the others."""

    def __init__(self, max_bytes: int) -> None:
        self.enabled = max_bytes > 0
        self.current: str | None = None
        self._saved: ByteLRU[SavedState] = ByteLRU(max_bytes)
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        return self._saved.max_bytes

    @property
    def nbytes(self) -> int:
        return self._saved.nbytes

    def switch_to(self, llama: Llama, key: str | None) -> None:
        """Make the context hold ``key``'s state (call on the generation thread)."""
        if not self.enabled or key == self.current:
            if key is not None and self.enabled:
                self.hits += 1
            return
        try:
            if self.current is not None and llama.n_tokens > 0:
                state = _save(llama)
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
        except Exception:
            log.exception("per-chat model state disabled after an error")
            self.enabled = False
            self.current = None
            self._saved.clear()
            llama.reset()  # type: ignore[no-untyped-call]


def _save(llama: Llama) -> SavedState:
    import llama_cpp

    ctx = llama._ctx.ctx
    size = llama_cpp.llama_state_get_size(ctx)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_get_data(ctx, buffer, size)
    return SavedState(tokens=llama.input_ids[: llama.n_tokens].copy(),
                      data=ctypes.string_at(buffer, written))


def _restore(llama: Llama, saved: SavedState) -> None:
    import llama_cpp

    buffer = (ctypes.c_uint8 * len(saved.data)).from_buffer_copy(saved.data)
    if llama_cpp.llama_state_set_data(llama._ctx.ctx, buffer, len(saved.data)) != len(
            saved.data):
        raise RuntimeError("llama.cpp refused the saved state")
    count = len(saved.tokens)
    llama.input_ids[:count] = saved.tokens
    llama.n_tokens = count
    llama._requires_eval = True  # logits are not part of what we restored
