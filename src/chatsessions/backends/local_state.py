"""Per-chat llama.cpp state: recent chats keep their own sequence in the one KV cache.

A llama.cpp context can hold several sequences in a unified KV cache (``n_seq_max``,
``kv_unified``): a cell shared by several sequences is stored once, and copying a
sequence (``llama_memory_seq_cp``) only adds a sequence id to its cells. llama-cpp-python
decodes everything as sequence 0, so sequence 0 is the chat being generated; the other
recent chats are parked in sequences of their own. A chat switch is then bookkeeping, the
same few tens of microseconds whatever the chats' lengths: park the current chat (its
cells gain its own sequence id and lose 0), bring the next one in (the reverse).

A chat with no sequence (new, or dropped to make room) starts from the longest token
prefix of its prompt that a held sequence has. The system prompt's rendering (up to the
first user message) is pinned in a sequence of its own the first time a chat uses it, so
every new chat with that system prompt evaluates only its first message.

Cells are finite (``n_ctx``): before each turn the least recently used chats, then the
least recently used prefixes, are dropped until the turn's sequence fits. The count is
an upper bound (cells shared with a pinned prefix are counted once, any other sharing is
not credited). Attention skips the masked cells of other sequences only with flash
attention, which the backend turns on for that reason.

This reaches below llama-cpp-python's public API, so any failure in a switch turns the
cache off rather than risking a wrong answer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

#: llama-cpp-python decodes every batch as sequence 0.
ACTIVE = 0
#: System prompts pinned at once (the chats', the titles', the summaries').
MAX_PREFIXES = 4
#: Cells kept free beyond the count, for llama.cpp's own rounding.
SLACK = 32


@dataclass(slots=True)
class _Held:
    """A sequence other than the active one: a parked chat or a pinned prefix."""

    seq: int
    tokens: Any  # numpy int array: the token ids its cells hold, from position 0
    base: _Held | None = None  # the pinned prefix whose cells it shares
    shared: int = 0  # how many of its first cells are that prefix's
    pinned: bool = False  # a prefix still held

    @property
    def own(self) -> int:
        """Cells counted for it: those it shares with a pinned prefix are the prefix's."""
        base = self.base
        return len(self.tokens) - (self.shared if base is not None and base.pinned else 0)


def open_context(llama: Llama, sequences: int) -> None:
    """Give ``llama`` a context with ``sequences`` sequences in one unified KV cache.

    llama-cpp-python only asks for several sequences when embedding, so the context it
    made is replaced by one made from the same parameters."""
    from llama_cpp import _internals

    params = llama.context_params
    params.n_seq_max = sequences
    params.kv_unified = True
    new = _internals.LlamaContext(model=llama._model, params=params, verbose=False)
    old, llama._ctx = llama._ctx, new
    old.close()  # type: ignore[no-untyped-call]


class StateCache:
    """Which chat sequence 0 holds, the sequences of recent chats and pinned prefixes."""

    def __init__(self, chats: int) -> None:
        self.enabled = chats > 0
        self.chats = chats
        #: sequences the context needs: the chats' (the active one's is 0), the prefixes'
        self.sequences = chats + MAX_PREFIXES if self.enabled else 1
        self.current: str | None = None
        self._parked: OrderedDict[str, _Held] = OrderedDict()
        self._prefixes: OrderedDict[bytes, _Held] = OrderedDict()
        self._free = list(range(self.sequences - 1, ACTIVE, -1))
        self._base: _Held | None = None  # the pinned prefix the active chat shares
        self._shared = 0
        self._pin: Any = None  # prompt prefix to pin when the active chat is parked
        self.hits = 0
        self.misses = 0

    @property
    def held_chats(self) -> int:
        return len(self._parked) + (self.current is not None)

    @property
    def held_prefixes(self) -> int:
        return len(self._prefixes)

    def cells(self, llama: Llama) -> int:
        """Upper bound of the KV cells in use: held sequences and the active one."""
        base = self._base
        active = llama.n_tokens - (self._shared if base is not None and base.pinned else 0)
        return self._held_cells() + active

    def switch_to(self, llama: Llama, key: str | None, prompt: Sequence[int] | None,
                  need: int, prefix: Callable[[], int]) -> None:
        """Make sequence 0 hold ``key``'s chat, with room for ``need`` cells (call on the
        generation thread). ``prompt`` is the turn's prompt as tokens, when known;
        ``prefix()`` the length of its system prompt's rendering (0: none)."""
        if not self.enabled:
            return
        try:
            if key is not None and key == self.current:
                self.hits += 1
            else:
                self._park(llama)
                self.current = key
                held = self._parked.pop(key, None) if key is not None else None
                if held is not None:
                    self._bring_in(llama, held)
                    self.hits += 1
                else:
                    self.misses += key is not None
                    if prompt is not None:
                        self._start(llama, prompt)
                        self._want_pin(prompt, prefix())
            if prompt is not None and self._base is not None:
                self._shared = min(self._shared, _common(self._base.tokens, prompt))
            self._make_room(llama, need)
        except Exception:
            log.exception("per-chat model state disabled after an error")
            self.enabled = False
            self.forget(llama)

    def forget(self, llama: Llama) -> None:
        """Drop every sequence (after a failed generation: the count may be wrong)."""
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llama._ctx.ctx), True)
        llama.n_tokens = 0
        llama._requires_eval = True
        self.clear()

    def clear(self) -> None:
        """Forget every sequence's bookkeeping (the context is gone, or cleared)."""
        self.current, self._base, self._shared, self._pin = None, None, 0, None
        for held in (*self._parked.values(), *self._prefixes.values()):
            self._free.append(held.seq)
            held.pinned = False
        self._parked.clear()
        self._prefixes.clear()

    # -- moves between sequences ---------------------------------------------------------

    def _park(self, llama: Llama) -> None:
        """Give the active chat's cells its own sequence and empty sequence 0."""
        mem = _memory(llama)
        n = llama.n_tokens
        tokens = llama.input_ids[:n].copy()
        if self._pin is not None:
            self._pin_prefix(mem, tokens)
        if self.current is not None and n > 0 and self.chats > 1:
            while len(self._parked) >= self.chats - 1:
                self._drop(mem, self._parked.popitem(last=False)[1])
            held = _Held(self._free.pop(), tokens, self._base, self._shared)
            if held.base is not None:
                held.shared = min(held.shared, _common(held.base.tokens, tokens))
            _seq_cp(mem, ACTIVE, held.seq, -1)
            self._parked[self.current] = held
        _seq_rm(mem, ACTIVE)
        llama.n_tokens = 0
        llama._requires_eval = True
        self._base, self._shared = None, 0

    def _bring_in(self, llama: Llama, held: _Held) -> None:
        mem = _memory(llama)
        _seq_cp(mem, held.seq, ACTIVE, -1)
        _seq_rm(mem, held.seq)
        self._free.append(held.seq)
        self._hold(llama, held.tokens)
        self._base, self._shared = held.base, held.shared

    def _start(self, llama: Llama, prompt: Sequence[int]) -> None:
        """Start sequence 0 from the longest prefix of ``prompt`` a held sequence has."""
        best: _Held | None = None
        length = 0
        for held in (*self._prefixes.values(), *self._parked.values()):
            common = _common(held.tokens, prompt)
            if common > length:
                best, length = held, common
        if best is None:
            return
        if best.pinned:  # a use: the newest of the prefixes now
            self._prefixes.move_to_end(best.tokens.tobytes())
            self._base, self._shared = best, length
        elif best.base is not None and best.base.pinned:
            self._base, self._shared = best.base, min(length, best.shared)
        _seq_cp(_memory(llama), best.seq, ACTIVE, length)
        self._hold(llama, best.tokens[:length])

    def _want_pin(self, prompt: Sequence[int], length: int) -> None:
        import numpy as np

        if length <= 0 or length >= len(prompt):
            return
        tokens = np.asarray(prompt[:length], dtype=np.intc)
        key = tokens.tobytes()
        if key in self._prefixes:
            return
        self._pin = tokens

    def _pin_prefix(self, mem: Any, tokens: Any) -> None:
        """Pin the prefix wanted by the chat now leaving sequence 0, if it still holds it."""
        pin, self._pin = self._pin, None
        if len(tokens) < len(pin) or _common(pin, tokens) < len(pin):
            return
        while len(self._prefixes) >= MAX_PREFIXES:
            self._drop(mem, self._prefixes.popitem(last=False)[1])
        held = _Held(self._free.pop(), pin, pinned=True)
        _seq_cp(mem, ACTIVE, held.seq, len(pin))
        self._prefixes[pin.tobytes()] = held
        if self.current is not None:
            self._base, self._shared = held, len(pin)

    def _make_room(self, llama: Llama, need: int) -> None:
        """Drop the least recently used sequences until ``need`` cells for the active one
        fit beside the held ones."""
        mem = _memory(llama)
        limit = llama.n_ctx() - SLACK
        while self._parked or self._prefixes:
            base = self._base
            active = need - (self._shared if base is not None and base.pinned else 0)
            if self._held_cells() + active <= limit:
                return
            if self._parked:
                self._drop(mem, self._parked.popitem(last=False)[1])
            else:
                self._drop(mem, self._prefixes.popitem(last=False)[1])

    def _drop(self, mem: Any, held: _Held) -> None:
        _seq_rm(mem, held.seq)
        self._free.append(held.seq)
        held.pinned = False  # the chats sharing it now count those cells as their own

    def _held_cells(self) -> int:
        return (sum(len(p.tokens) for p in self._prefixes.values())
                + sum(h.own for h in self._parked.values()))

    @staticmethod
    def _hold(llama: Llama, tokens: Any) -> None:
        count = len(tokens)
        llama.input_ids[:count] = tokens
        llama.n_tokens = count
        llama._requires_eval = True  # no logits for the held tokens


def _common(held: Any, prompt: Any) -> int:
    """The length of the common prefix of two token sequences (lists or arrays)."""
    import numpy as np

    count = min(len(held), len(prompt))
    diff = np.flatnonzero(np.asarray(held[:count]) != np.asarray(prompt[:count]))
    return int(diff[0]) if len(diff) else count


def _memory(llama: Llama) -> Any:
    import llama_cpp

    return llama_cpp.llama_get_memory(llama._ctx.ctx)


def _seq_cp(mem: Any, source: int, target: int, end: int) -> None:
    """Let ``target`` share ``source``'s cells of positions [0, end) (-1: all)."""
    import llama_cpp

    llama_cpp.llama_memory_seq_cp(mem, source, target, 0 if end >= 0 else -1, end)


def _seq_rm(mem: Any, seq: int) -> None:
    import llama_cpp

    if not llama_cpp.llama_memory_seq_rm(mem, seq, -1, -1):
        raise RuntimeError(f"llama.cpp did not remove sequence {seq}")
