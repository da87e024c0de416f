"""A dictionary bounded by bytes, least recently used out first: the history cache."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


V = TypeVar("V", bound=Sized)


class ByteLRU(Generic[V]):
    """Least-recently-used entries within a byte budget (the newest entry always stays)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, V] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: V) -> None:
        self.discard(key)
        self._entries[key] = entry
        self._bytes += entry.nbytes
        self._evict()

    def pop(self, key: str) -> V | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.nbytes
        return entry

    def discard(self, key: str) -> None:
        self.pop(key)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def grew(self, key: str, nbytes: int) -> None:
        """Account for bytes added to an entry in place."""
        if key in self._entries:
            self._bytes += nbytes
            self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            _, entry = self._entries.popitem(last=False)
            self._bytes -= entry.nbytes
