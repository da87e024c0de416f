"""Target 2: a turn's non-model cost does not grow with the chat's length.

The model answers at once (:class:`InstantBackend`; for the LangChain comparison, an
instant ``RunnableLambda``), so a turn's wall time *is* its storage, cache, lock and
context work; a transparent proxy around our store splits off the part spent in store
calls. ``chats`` long chats first run turns 1–189 (the curve in the plot). Then their
turns 190–200 alternate, step by step, with turns 1–10 of as many fresh chats, and the
figure is the median of the first over the median of the second: both windows are
measured side by side in time, so load from elsewhere on the machine hits them alike.
LangChain goes through the same schedule, reported without a target, to show what a
history layer that re-reads the chat every turn does over the same 200 turns.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.prompt_values import PromptValue

from bench.harness import SYSTEM_PROMPT, InstantBackend, ModelTimer, Ratio, median, user_text
from bench.langchain_side import LangChainSide, SQLChatMessageHistory
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


class _Ours:
    """AsyncChatSessions on an instant backend, driven from a private event loop; each
    turn is timed inside the coroutine, so driving the loop from here is not counted."""

    def __init__(self, database_url: str) -> None:
        self.loop, self.timer = asyncio.new_event_loop(), ModelTimer()
        self.store = TimedStore(open_store(database_url))
        self.sessions = AsyncChatSessions(
            store=self.store, backend=InstantBackend(self.timer),  # type: ignore[arg-type]
            database_url=database_url, system_prompt=SYSTEM_PROMPT, auto_title=False)
        self.loop.run_until_complete(self.sessions.open())
        self.turn(self.fresh_chat(), 0, 0)  # warm-up

    def fresh_chat(self) -> str:
        return self.loop.run_until_complete(self.sessions.create_chat())

    async def _turn(self, chat_id: str, text: str) -> tuple[float, float]:
        self.store.seconds = 0.0
        began = time.perf_counter()
        await self.sessions.send(chat_id, text)
        return time.perf_counter() - began - self.timer.last, self.store.seconds

    def turn(self, chat_id: str, chat: int, turn: int) -> tuple[float, float]:
        return self.loop.run_until_complete(self._turn(chat_id, user_text(chat, turn)))

    def close(self) -> None:
        self.loop.run_until_complete(self.sessions.close())
        self.loop.close()


class _TimedHistory(SQLChatMessageHistory):
    """SQLChatMessageHistory adding up the seconds spent reading and writing it."""

    seconds = 0.0  # class-wide: one benchmark side at a time

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        started = time.perf_counter()
        try:
            return super().messages
        finally:
            _TimedHistory.seconds += time.perf_counter() - started

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        started = time.perf_counter()
        try:
            super().add_messages(messages)
        finally:
            _TimedHistory.seconds += time.perf_counter() - started


class _LangChain(LangChainSide):
    """The LangChain side with a model step that answers at once."""

    history_class = _TimedHistory

    def __init__(self, database_url: str) -> None:
        super().__init__("http://127.0.0.1:9/v1", database_url)  # the client is never used
        self.open()

    def _model(self, prompt: PromptValue) -> BaseMessage:
        with self.timer.time():
            return AIMessage(content=f"Reply {len(prompt.to_messages())}: it is on its way.")

    def fresh_chat(self) -> str:
        return self.new_chat()[0]

    def turn(self, chat_id: str, chat: int, turn: int) -> tuple[float, float]:
        _TimedHistory.seconds = 0.0
        _, seconds = self.send(chat_id, user_text(chat, turn))
        return seconds - self.timer.last, _TimedHistory.seconds


def schedule(
    side: _Ours | _LangChain, chats: int, turns: int
) -> Generator[None, None, dict[str, Any]]:
    """Long chats up to turn ``turns - LATE``, then their last turns beside fresh chats.

    A generator that pauses after every turn, so several sides can take turns about."""
    samples: dict[str, list[list[float]]] = {
        key: [[] for _ in range(turns)]
        for key in ("long_nonmodel", "long_store", "fresh_nonmodel", "fresh_store")}

    def step(kind: str, chat_id: str, chat: int, turn: int) -> None:
        nonmodel, in_store = side.turn(chat_id, chat, turn)
        samples[f"{kind}_nonmodel"][turn].append(nonmodel)
        samples[f"{kind}_store"][turn].append(in_store)

    long_ids = [side.fresh_chat() for _ in range(chats)]
    for turn in range(turns - LATE):
        for chat, chat_id in enumerate(long_ids):
            step("long", chat_id, chat, turn)
            yield
    fresh_ids = [side.fresh_chat() for _ in range(chats)]
    for index in range(LATE):
        for chat in range(chats):
            pair = [("long", long_ids[chat], turns - LATE + index),
                    ("fresh", fresh_ids[chat], index)]
            for kind, chat_id, turn in pair[::-1] if (index + chat) % 2 else pair:
                step(kind, chat_id, chat, turn)
                yield

    def window(key: str, rows: slice) -> float:
        return median([x for row in samples[key][rows] for x in row])

    early, late = slice(0, EARLY), slice(turns - LATE, turns)
    return {
        "early_turns": [1, EARLY],
        "late_turns": [turns - LATE + 1, turns],
        "early_median_s": window("fresh_nonmodel", early),
        "late_median_s": window("long_nonmodel", late),
        "ratio": window("long_nonmodel", late) / window("fresh_nonmodel", early),
        "early_store_median_s": window("fresh_store", early),
        "late_store_median_s": window("long_store", late),
        "per_turn_median_s": [median(row) for row in samples["long_nonmodel"]],
        "per_turn_store_median_s": [median(row) for row in samples["long_store"]],
        "samples_s": {key: micro(rows) for key, rows in samples.items()},
    }


def run(workdir: Path, pg_url: str, chats: int, turns: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    """All four sides (ours, LangChain; SQLite, PostgreSQL) in lockstep, one turn each in
    turn, so their curves share whatever load the machine had."""
    log(f"flat per-turn cost: 4 sides in lockstep, {chats} long chats x {turns} turns each")
    sides: dict[str, _Ours | _LangChain] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for label in ("sqlite", "postgresql"):
            for name, make in (("ours", _Ours), ("langchain", _LangChain)):
                url = f"sqlite:///{workdir / f'flat-{name}.db'}" if label == "sqlite" else pg_url
                sides[f"{name}_{label}"] = make(url)
        running = {key: schedule(side, chats, turns) for key, side in sides.items()}
        while running:
            for key, steps in list(running.items()):
                try:
                    next(steps)
                except StopIteration as done:
                    results[key] = done.value
                    del running[key]
    finally:
        for side in sides.values():
            side.close()
    results = {key: results[key] for key in sides}
    ratios = [
        Ratio(f"flat_{key}", r["ratio"], 1.2 if key.startswith("ours") else None, "lower",
              f"median non-model time, turns {r['late_turns'][0]}-{r['late_turns'][1]} / "
              f"turns 1-{EARLY}, {key.replace('_', ' on ')}")
        for key, r in results.items()
    ]
    # The issue's own words: the *storage* work of a late turn against an early one. The
    # figure above also holds building the request, which must list the whole history.
    ratios += [
        Ratio(f"flat_{key}_store", r["late_store_median_s"] / r["early_store_median_s"],
              1.2 if key.startswith("ours") else None, "lower",
              f"median time inside store calls, turns {r['late_turns'][0]}-"
              f"{r['late_turns'][1]} / turns 1-{EARLY}, {key.replace('_', ' on ')}")
        for key, r in results.items()
    ]
    return {
        "title": "Flat per-turn cost",
        "sizes": {"long_chats": chats, "turns": turns},
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }
