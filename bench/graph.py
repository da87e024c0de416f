"""LangGraph as a peer: a ``MessagesState`` graph with its SQLite and PostgreSQL checkpointers.

LangGraph is what LangChain's docs now send chat builders to for persistence. The graph is
the smallest chat graph there is (START -> model -> END over ``MessagesState``), the thread
id is the chat id, and each turn is one ``invoke`` with the new user message, in each of
LangGraph's durability modes: ``sync`` (checkpoint written before the next step), ``async``
(written in the background while the next step runs) and ``exit`` (written once, when the
run ends). The model answers at once on every side, so a turn's time is the history layer's
own work; ours runs on the same instant model (:class:`InstantBackend`).

Every side gets its own fresh database. Storage is what the database grew by over the run
(SQLite: pages after a WAL checkpoint; PostgreSQL: ``pg_database_size``), per chat; the
sides take their turns alternately, so load from elsewhere lands on all of them alike.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import psycopg
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph

from bench.flat import _Ours
from bench.harness import SYSTEM_PROMPT, ModelTimer, Ratio, median, pg_database, user_text
from bench.workload import micro

Durability = Literal["sync", "async", "exit"]
MODES: tuple[Durability, ...] = ("sync", "async", "exit")
#: turns 1-10 against the last ten
WINDOW = 10


class _Graph:
    """One LangGraph chat graph over one checkpointer, in one durability mode."""

    def __init__(self, database_url: str, durability: Durability) -> None:
        self.timer, self.durability, self.url = ModelTimer(), durability, database_url
        self._stack = contextlib.ExitStack()
        if database_url.startswith("sqlite:///"):
            conn = sqlite3.connect(database_url.removeprefix("sqlite:///"),
                                   check_same_thread=False)
            # the same pragmas our store runs with, so neither side pays for fsyncs the
            # other skips
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._stack.callback(conn.close)
            saver: SqliteSaver | PostgresSaver = SqliteSaver(conn)
        else:
            pg = psycopg.connect(database_url, autocommit=True, prepare_threshold=0)
            self._stack.callback(pg.close)
            saver = PostgresSaver(pg)  # type: ignore[arg-type]
        saver.setup()
        graph = StateGraph(MessagesState)
        graph.add_node("model", self._model)
        graph.add_edge(START, "model")
        graph.add_edge("model", END)
        self.graph = graph.compile(checkpointer=saver)
        self._chats = 0
        self.turn(self.fresh_chat(), 0, 0)  # warm-up, as on every side

    def _model(self, state: MessagesState) -> dict[str, list[BaseMessage]]:
        with self.timer.time():
            reply = f"Reply {len(state['messages'])}: your parcel is on its way."
            return {"messages": [AIMessage(content=reply)]}

    def fresh_chat(self) -> str:
        self._chats += 1
        return f"thread-{self._chats}"

    def turn(self, chat_id: str, chat: int, turn: int) -> tuple[float, float]:
        new: list[BaseMessage] = [HumanMessage(content=user_text(chat, turn))]
        if turn == 0:
            new.insert(0, SystemMessage(content=SYSTEM_PROMPT))
        config: Any = {"configurable": {"thread_id": chat_id}}
        started = time.perf_counter()
        self.graph.invoke({"messages": new}, config, durability=self.durability)
        return time.perf_counter() - started - self.timer.last, 0.0

    def close(self) -> None:
        self._stack.close()


def database_bytes(url: str) -> int:
    """How big the database is now, WAL folded in."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            return int(pages * size)
    with psycopg.connect(url, autocommit=True) as pg:
        row = pg.execute("SELECT pg_database_size(current_database())").fetchone()
        assert row is not None
        return int(row[0])


@contextlib.contextmanager
def _databases(workdir: Path, names: list[str]) -> Iterator[dict[str, str]]:
    """A fresh database per side: a SQLite file, or a throwaway PostgreSQL database."""
    with contextlib.ExitStack() as stack:
        urls = {}
        for name in names:
            if name.endswith("sqlite"):
                urls[name] = f"sqlite:///{workdir / f'graph-{name}.db'}"
            else:
                urls[name] = stack.enter_context(pg_database())
        yield urls


def run(workdir: Path, chats: int, turns: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Ours and LangGraph (three durability modes), on SQLite and PostgreSQL, in lockstep."""
    names = [f"{side}_{engine}" for engine in ("sqlite", "postgresql")
             for side in ("ours", *(f"langgraph_{mode}" for mode in MODES))]
    log(f"LangGraph peer: {len(names)} sides in lockstep, {chats} chats x {turns} turns")
    results: dict[str, dict[str, Any]] = {}
    with _databases(workdir, names) as urls:
        sides: dict[str, _Ours | _Graph] = {}
        empty: dict[str, int] = {}
        try:
            for name in names:
                if name.startswith("ours"):
                    sides[name] = _Ours(urls[name])
                else:
                    mode: Any = name.split("_")[1]
                    sides[name] = _Graph(urls[name], mode)
                empty[name] = database_bytes(urls[name])
            ids = {name: [side.fresh_chat() for _ in range(chats)]
                   for name, side in sides.items()}
            samples = {name: [[0.0] * chats for _ in range(turns)] for name in names}
            step = 0
            for turn in range(turns):
                for chat in range(chats):
                    shift = step % len(names)
                    for name in [*names[shift:], *names[:shift]]:
                        nonmodel, _ = sides[name].turn(ids[name][chat], chat, turn)
                        samples[name][turn][chat] = nonmodel
                    step += 1
        finally:
            for side in sides.values():
                side.close()
        for name in names:
            rows = samples[name]
            early = median([x for row in rows[:WINDOW] for x in row])
            late = median([x for row in rows[-WINDOW:] for x in row])
            grown = database_bytes(urls[name]) - empty[name]
            results[name] = {
                "early_median_s": early, "late_median_s": late,
                "bytes_per_chat": grown / chats,
                "per_turn_median_s": [median(row) for row in rows],
                "samples_s": micro(rows),
            }
    ratios = []
    for engine in ("sqlite", "postgresql"):
        ours = results[f"ours_{engine}"]
        graphs = {mode: results[f"langgraph_{mode}_{engine}"] for mode in MODES}
        fastest = min(MODES, key=lambda m: graphs[m]["late_median_s"])
        smallest = min(MODES, key=lambda m: graphs[m]["bytes_per_chat"])
        ratios.append(Ratio(
            f"langgraph_{engine}_late_turn", graphs[fastest]["late_median_s"]
            / ours["late_median_s"], 20.0, "higher",
            f"LangGraph's fastest mode ({fastest}) / ours, median time of turns "
            f"{turns - WINDOW + 1}-{turns}, {engine}"))
        ratios.append(Ratio(
            f"langgraph_{engine}_storage", graphs[smallest]["bytes_per_chat"]
            / max(ours["bytes_per_chat"], 1.0), 100.0, "higher",
            f"database bytes per {turns}-turn chat, LangGraph's smallest mode ({smallest}) "
            f"/ ours, {engine}"))
        for mode in MODES:
            ratios.append(Ratio(
                f"langgraph_{mode}_{engine}_growth", graphs[mode]["late_median_s"]
                / graphs[mode]["early_median_s"], None, "lower",
                f"LangGraph ({mode}, {engine}): turns {turns - WINDOW + 1}-{turns} / "
                f"turns 1-{WINDOW}"))
    return {
        "title": "LangGraph checkpointers as peers",
        "sizes": {"chats": chats, "turns": turns},
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }
