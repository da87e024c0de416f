"""Target 2: a turn's non-model cost does not grow with the chat's length.

An :class:`InstantBackend` answers at once, so a turn's wall time *is* its storage, cache,
lock and context work; a transparent proxy around the store splits off the part spent in
store calls. ``chats`` long chats first run turns 1–189 (the curve in the plot). Then
their turns 190–200 alternate, step by step, with turns 1–10 of as many fresh chats, and
the figure is the median of the first over the median of the second: both windows are
measured side by side in time, so load from elsewhere on the machine hits them alike.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from bench.harness import SYSTEM_PROMPT, InstantBackend, ModelTimer, Ratio, median, user_text
from bench.workload import micro
from chatsessions import AsyncChatSessions
from chatsessions.store import Store, open_store

EARLY, LATE = 10, 11  # turns 1-10 against turns 190-200 of a 200-turn chat


class TimedStore:
    """Delegates to a real store and adds up the seconds spent in its coroutines."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


class _Turns:
    """Runs one turn and records its non-model and in-store seconds under its turn index."""

    def __init__(self, sessions: AsyncChatSessions, store: TimedStore, timer: ModelTimer,
                 turns: int) -> None:
        self.sessions, self.store, self.timer = sessions, store, timer
        self.nonmodel: list[list[float]] = [[] for _ in range(turns)]
        self.in_store: list[list[float]] = [[] for _ in range(turns)]

    async def turn(self, chat_id: str, chat: int, turn: int, record: bool = True) -> None:
        self.store.seconds = 0.0
        began = time.perf_counter()
        await self.sessions.send(chat_id, user_text(chat, turn))
        if record:
            self.nonmodel[turn].append(time.perf_counter() - began - self.timer.last)
            self.in_store[turn].append(self.store.seconds)


async def _measure(database_url: str, chats: int, turns: int) -> dict[str, Any]:
    timer = ModelTimer()
    store = TimedStore(open_store(database_url))
    sessions = AsyncChatSessions(store=store, backend=InstantBackend(timer),  # type: ignore[arg-type]
                                 database_url=database_url, system_prompt=SYSTEM_PROMPT)
    long_run = _Turns(sessions, store, timer, turns)
    fresh_run = _Turns(sessions, store, timer, turns)
    async with sessions:
        await sessions.send(await sessions.create_chat(), "warm-up")
        long_ids = [await sessions.create_chat() for _ in range(chats)]
        for turn in range(turns - LATE):
            for chat, chat_id in enumerate(long_ids):
                await long_run.turn(chat_id, chat, turn)
        fresh_ids = [await sessions.create_chat() for _ in range(chats)]
        for step in range(LATE):
            for chat in range(chats):
                pair = [(long_run, long_ids[chat], turns - LATE + step, True),
                        (fresh_run, fresh_ids[chat], step, step < EARLY)]
                for runner, chat_id, turn, record in pair[::-1] if (step + chat) % 2 else pair:
                    await runner.turn(chat_id, chat, turn, record)

    def window(rows: list[list[float]]) -> float:
        return median([x for row in rows for x in row])

    late_rows = slice(turns - LATE, turns)
    early, late = window(fresh_run.nonmodel[:EARLY]), window(long_run.nonmodel[late_rows])
    return {
        "early_turns": [1, EARLY],
        "late_turns": [turns - LATE + 1, turns],
        "early_median_s": early,
        "late_median_s": late,
        "ratio": late / early,
        "early_store_median_s": window(fresh_run.in_store[:EARLY]),
        "late_store_median_s": window(long_run.in_store[late_rows]),
        "per_turn_median_s": [median(row) for row in long_run.nonmodel],
        "per_turn_store_median_s": [median(row) for row in long_run.in_store],
        "samples_s": {"long_nonmodel": micro(long_run.nonmodel),
                      "long_store": micro(long_run.in_store),
                      "fresh_nonmodel": micro(fresh_run.nonmodel[:EARLY]),
                      "fresh_store": micro(fresh_run.in_store[:EARLY])},
    }


def run(databases: dict[str, str], chats: int, turns: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    results = {}
    for label, url in databases.items():
        log(f"flat per-turn cost: {label}, {chats} long chats x {turns} turns")
        results[label] = asyncio.run(_measure(url, chats, turns))
    ratios = [
        Ratio(f"flat_{label}", r["ratio"], 1.2, "lower",
              f"median non-model time of turns {r['late_turns'][0]}-{r['late_turns'][1]} / "
              f"turns 1-{EARLY}, {label}")
        for label, r in results.items()
    ]
    return {
        "title": "Flat per-turn cost",
        "sizes": {"chats": chats, "turns": turns},
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }
