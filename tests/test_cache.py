"""The history cache: incremental by seq, ok messages only, bounded by bytes (LRU)."""

from __future__ import annotations

from chatsessions.engine.cache import History, HistoryCache
from chatsessions.types import Message, Role, TurnStatus


def msg(seq: int, text: str = "x" * 100, status: TurnStatus = TurnStatus.OK) -> Message:
    return Message("c", seq, Role.USER if seq % 2 else Role.ASSISTANT, text, status=status)


def test_add_skips_seen_rows_and_non_ok_messages() -> None:
    entry = History()
    entry.add([msg(1), msg(2, status=TurnStatus.FAILED), msg(3, status=TurnStatus.PENDING)])
    entry.add([msg(2), msg(3), msg(4)])  # 2 and 3 already seen: ignored
    assert [m.seq for m in entry.messages] == [1, 4]
    assert entry.last_seq == 4
    assert len(entry.tokens) == 2
    assert entry.shown == [m.as_openai() for m in entry.messages]


def test_a_regenerated_answer_replaces_the_old_one_in_every_parallel_list() -> None:
    entry = History()
    entry.add([msg(1, "q"), msg(2, "old answer"), msg(3, "q2"), msg(4, "a2")])
    entry.tokens[1] = 7
    regenerated = Message("c", 5, Role.ASSISTANT, "new answer", replaces_seq=4)
    entry.add([regenerated])
    assert [m.seq for m in entry.messages] == [1, 2, 3, 5]
    assert entry.shown == [m.as_openai() for m in entry.messages]
    assert entry.tokens == [None, 7, None, None]


def test_lru_eviction_by_bytes() -> None:
    one_entry = History()
    one_entry.add([msg(1)])
    cache = HistoryCache(max_bytes=one_entry.nbytes * 2)
    for name in "abc":
        entry = History()
        entry.add([msg(1)])
        cache.put(name, entry)
        cache.get("a")  # keep "a" recently used
    assert cache.get("a") is not None
    assert cache.get("b") is None  # least recently used went first
    assert cache.get("c") is not None
    assert cache.nbytes <= cache.max_bytes


def test_growth_in_place_is_accounted() -> None:
    cache = HistoryCache(max_bytes=10_000)
    entry = History()
    cache.put("a", entry)
    cache.grew("a", entry.add([msg(1), msg(2)]))
    assert cache.nbytes == entry.nbytes > 200
    cache.discard("a")
    assert cache.nbytes == 0
    assert len(cache) == 0
