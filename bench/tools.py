"""Target: a tool round adds no more storage work than a plain turn.

`AsyncChatSessions` with an in-process model that answers at once: offered tools after a
user message, it calls one; shown the output, it answers in text. Pairs of chats take
steps in turn: plain turns (`send`, no tools) in one, and in the other a turn whose
answer calls a tool (`send` with a tool definition) followed by its tool round
(`send_tool_results`: the output stored with the next answer). For each step a proxy
around the store adds up the time spent inside store calls, and the database
connections count the SQL statements run, transaction control left out (SQLite: every
statement on every connection; PostgreSQL: SQLAlchemy's and the driver's own). The
figures divide a tool round's median by a plain turn's. SQLite and PostgreSQL run in
lockstep, one step each in turn, so load from elsewhere on the machine hits both alike.

A round takes the path a turn takes: its first write takes the lease on the chat as
this process presumes it (``Store.begin_round``, no read first), and one write stores
its outputs and its answer with the counters and releases the lease
(``Store.complete_round``: one statement on PostgreSQL, one transaction on SQLite).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from bench.flat import TimedStore
from bench.harness import (
    SYSTEM_PROMPT,
    InstantBackend,
    ModelTimer,
    Ratio,
    median,
    user_text,
)
from bench.workload import micro
from chatsessions import AsyncChatSessions
from chatsessions.backends.base import ChatMessages, Completion, StreamItem
from chatsessions.store import open_store
from chatsessions.types import GenerationParams, ToolCall, ToolOptions, Usage

ORDER = {"name": "order_status", "description": "Where an order is.",
         "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                        "required": ["order_id"]}}
STEPS = ("turn", "call", "round")
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")


class StatementCount:
    """SQL statements run while it is the current count (one side steps at a time)."""

    current: StatementCount | None = None

    def __init__(self) -> None:
        self.statements = 0

    @classmethod
    def seen(cls, sql: str) -> None:
        if cls.current is not None and not sql.lstrip().upper().startswith(_CONTROL):
            cls.current.statements += 1


@event.listens_for(sa.engine.Engine, "connect")
def _watch(dbapi_conn: Any, _record: Any) -> None:
    """Every new connection reports its statements: sqlite3 through its trace callback
    (SQLAlchemy's statements and the store's own driver statements alike), asyncpg
    through its query logger (the driver statements; SQLAlchemy's prepared ones are
    counted by ``_before_execute``)."""
    if hasattr(dbapi_conn, "set_trace_callback"):
        dbapi_conn.set_trace_callback(StatementCount.seen)
    raw = getattr(dbapi_conn, "driver_connection", None)
    if raw is not None and hasattr(raw, "add_query_logger"):
        raw.add_query_logger(lambda record: StatementCount.seen(record.query))


@event.listens_for(sa.engine.Engine, "before_cursor_execute")
def _before_execute(conn: sa.Connection, _cursor: Any, sql: str, *_args: Any) -> None:
    if conn.dialect.name != "sqlite":  # SQLite's trace callback sees these already
        StatementCount.seen(sql)


class ToolModel(InstantBackend):
    """Answers at once; after a user message with tools offered it calls the first."""

    name = "instant-tools"

    async def complete(self, messages: ChatMessages, params: GenerationParams, model: str,
                       *, tools: ToolOptions | None = None) -> Completion:
        with self.timer.time():
            if tools is not None and tools.offered and messages[-1]["role"] == "user":
                call = ToolCall(f"call_{len(messages)}", tools.tools[0].name,
                                '{"order_id": "1234"}')
                return Completion("", Usage(len(messages), 8), model, "tool_calls", (call,))
            text = f"Reply {len(messages)}: your parcel is on its way."
            return Completion(text, Usage(len(messages), 8), model, "stop")

    async def stream(self, messages: ChatMessages, params: GenerationParams, model: str,
                     *, tools: ToolOptions | None = None) -> AsyncIterator[StreamItem]:
        completion = await self.complete(messages, params, model, tools=tools)
        if completion.text:
            yield completion.text
        yield completion


class _Side:
    """AsyncChatSessions on the instant tool model, driven from a private event loop;
    each step is timed inside the coroutine."""

    def __init__(self, database_url: str) -> None:
        self.loop, self.timer = asyncio.new_event_loop(), ModelTimer()
        self.store = TimedStore(open_store(database_url))
        self.count = StatementCount()
        self.sessions = AsyncChatSessions(
            store=self.store, backend=ToolModel(self.timer),  # type: ignore[arg-type]
            database_url=database_url, system_prompt=SYSTEM_PROMPT, auto_title=False)
        self.loop.run_until_complete(self.sessions.open())
        warm = self.fresh_chat()
        for step in STEPS:
            self.step(step, warm, 0, 0)

    def fresh_chat(self) -> str:
        return self.loop.run_until_complete(self.sessions.create_chat())

    async def _step(self, step: str, chat_id: str, text: str) -> tuple[float, float, int]:
        self.store.seconds, self.count.statements = 0.0, 0
        StatementCount.current = self.count
        began = time.perf_counter()
        try:
            if step == "turn":
                await self.sessions.send(chat_id, text)
            elif step == "call":
                answer = await self.sessions.send(chat_id, text, tools=[ORDER])
                assert answer.tool_calls, "the instant model did not call the tool"
            else:
                (call,) = await self.sessions.pending_tool_calls(chat_id)
                self.store.seconds, self.count.statements = 0.0, 0  # the round alone
                began = time.perf_counter()
                await self.sessions.send_tool_results(chat_id, {call.id: "1234: shipped"})
            elapsed = time.perf_counter() - began - self.timer.last
            await asyncio.sleep(0)  # asyncpg's query loggers report on the next pass
            return elapsed, self.store.seconds, self.count.statements
        finally:
            StatementCount.current = None

    def step(self, step: str, chat_id: str, chat: int, turn: int) -> tuple[float, float, int]:
        return self.loop.run_until_complete(self._step(step, chat_id, user_text(chat, turn)))

    def close(self) -> None:
        self.loop.run_until_complete(self.sessions.close())
        self.loop.close()


def schedule(side: _Side, chats: int, rounds: int) -> Generator[None, None, dict[str, Any]]:
    """``rounds`` times a plain turn in one chat of each pair, a calling turn and its
    tool round in the other; pauses after every step so the sides take turns about."""
    samples: dict[str, list[float]] = {
        f"{step}_{what}": [] for step in STEPS for what in ("nonmodel", "store", "statements")}
    plain = [side.fresh_chat() for _ in range(chats)]
    tooled = [side.fresh_chat() for _ in range(chats)]
    for turn in range(rounds):
        for chat in range(chats):
            for step in STEPS:
                chat_id = plain[chat] if step == "turn" else tooled[chat]
                nonmodel, in_store, statements = side.step(step, chat_id, chat, turn)
                samples[f"{step}_nonmodel"].append(nonmodel)
                samples[f"{step}_store"].append(in_store)
                samples[f"{step}_statements"].append(statements)
                yield
    result: dict[str, Any] = {}
    for step in STEPS:
        result[f"{step}_median_s"] = median(samples[f"{step}_nonmodel"])
        result[f"{step}_store_median_s"] = median(samples[f"{step}_store"])
        result[f"{step}_statements"] = median(samples[f"{step}_statements"])
    result["samples_s"] = {key: micro([rows]) for key, rows in samples.items()
                           if not key.endswith("statements")}
    return result


def run(workdir: Path, pg_url: str, chats: int, rounds: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    log(f"tool rounds: 2 sides in lockstep, {chats} chats x {rounds} x (turn, call, round)")
    sides: dict[str, _Side] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        sides["sqlite"] = _Side(f"sqlite:///{workdir / 'tools.db'}")
        sides["postgresql"] = _Side(pg_url)
        running = {key: schedule(side, chats, rounds) for key, side in sides.items()}
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
    ratios = []
    for key, r in results.items():
        ratios += [
            Ratio(f"tools_{key}_store", r["round_store_median_s"] / r["turn_store_median_s"],
                  1.2, "lower", f"median time inside store calls, a tool round / a plain "
                                f"turn, on {key}"),
            Ratio(f"tools_{key}_statements", r["round_statements"] / r["turn_statements"],
                  1.0, "lower", f"median SQL statements, a tool round / a plain turn, "
                                f"on {key}"),
        ]
    return {
        "title": "Tool rounds",
        "sizes": {"chats": chats, "rounds": rounds},
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| database | step | non-model ms | in store ms | statements |",
             "| --- | --- | ---: | ---: | ---: |"]
    names = {"turn": "plain turn", "call": "turn calling a tool", "round": "tool round"}
    for key, r in results.items():
        lines += [f"| {key} | {names[step]} | {r[f'{step}_median_s'] * 1e3:.2f} | "
                  f"{r[f'{step}_store_median_s'] * 1e3:.2f} | {r[f'{step}_statements']:.0f} |"
                  for step in STEPS]
    return lines
