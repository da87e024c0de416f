"""Lookups at scale: usage, search and title filtering over 100,000 chats, and a cold turn.

A SQLite store is seeded in bulk straight through SQL (chats over 30 days, four messages
each, every message saying the common word "order"), then given what migration 0006
gives an existing database: the usage counters rebuilt from the messages, the search
index caught up. Each lookup is timed as the median of ``REPEAT`` calls after one
warm-up: ``usage()`` over everything and over a range with partial edge hours, a search
for the common word and for a rare one, ``list_chats(title_contains=...)`` for a word in
a tenth of the titles and for one in every title. With a PostgreSQL database the same
rows are copied there and the same lookups timed (``pg_``). "Before" figures (SQLite) run
the queries these replaced (the full usage scan, the search that ranked every match with
FTS5's bm25, the title ``LIKE``) on the same data. Last, a
turn on a chat nobody touched since the service started (its history read from the
database) against a turn on a chat already cached, through ``AsyncChatSessions`` and
the fake model.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa

from bench.harness import MODEL, Ratio, median
from bench.sides import settings
from chatsessions import AsyncChatSessions
from chatsessions.store import search as fulltext
from chatsessions.store import usage
from chatsessions.store.schema import chats
from chatsessions.store.sql import SQLStore
from chatsessions.types import utcnow

REPEAT = 15
BUDGET_MS = 20.0
TITLE_WORDS = ["refund", "invoice", "delivery", "parcel", "warranty",
               "account", "payment", "return", "exchange", "address"]
#: the search that ranked every match, as it was before the candidate bound
_RANK_EVERY_MATCH = sa.text("""
    SELECT m.chat_id, m.seq, snippet(messages_fts, 0, '[', ']', '…', 16)
    FROM messages_fts JOIN messages AS m ON m.rowid = messages_fts.rowid
    JOIN chats AS c ON c.id = m.chat_id
    WHERE messages_fts MATCH :q AND c.tenant_id = :tenant
    ORDER BY messages_fts.rank, m.created_at DESC LIMIT 20
""")


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


_CHAT_COLUMNS = ("id", "tenant_id", "title", "system_prompt", "backend", "model", "params",
                 "metadata", "message_count", "prompt_tokens", "completion_tokens",
                 "created_at", "updated_at", "context_policy")
_MESSAGE_COLUMNS = ("chat_id", "seq", "role", "content", "status", "model", "prompt_tokens",
                    "completion_tokens", "created_at")


def rows(count: int, per_chat: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """``count`` chats of ``per_chat`` messages (user and answer in turn), times as
    datetimes."""
    rng = random.Random(16)
    now = utcnow()
    chat_rows, message_rows = [], []
    for i in range(count):
        created = now - timedelta(seconds=rng.uniform(3600, 30 * 86400))
        title = f"Order {i} {TITLE_WORDS[i % len(TITLE_WORDS)]}"
        chat_rows.append((f"chat-{i:06d}", "default", title, "Be brief.", "openai", MODEL,
                          "{}", "{}", per_chat, 40 * per_chat, 10 * per_chat, created,
                          created, "trim"))
        for seq in range(1, per_chat + 1):
            role = "user" if seq % 2 else "assistant"
            words = " ".join(f"w{rng.randrange(50_000)}" for _ in range(6))
            content = f"Turn {seq}: about order #{i}, {words}"
            tokens = (0, 0) if role == "user" else (40 * seq, 20)
            message_rows.append((f"chat-{i:06d}", seq, role, content, "ok",
                                 None if role == "user" else MODEL, *tokens,
                                 created + timedelta(seconds=seq)))
    return chat_rows, message_rows


async def seed_postgresql(url: str, count: int, per_chat: int) -> None:
    """The same rows as :func:`seed`, by COPY."""
    chat_rows, message_rows = rows(count, per_chat)
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://", 1))
    try:
        await conn.copy_records_to_table("chats", records=chat_rows, columns=_CHAT_COLUMNS)
        await conn.copy_records_to_table("messages", records=message_rows,
                                         columns=_MESSAGE_COLUMNS)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def seed(path: Path, count: int, per_chat: int) -> None:
    """``count`` chats of ``per_chat`` messages (user and answer in turn), in bulk."""
    chat_rows, message_rows = rows(count, per_chat)
    chat_rows = [(*r[:11], _stamp(r[11]), _stamp(r[12]), r[13]) for r in chat_rows]
    message_rows = [(*r[:8], _stamp(r[8])) for r in message_rows]
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO chats (id, tenant_id, title, system_prompt, backend, model, "
                "params, metadata, message_count, prompt_tokens, completion_tokens, "
                "created_at, updated_at, context_policy) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chat_rows)
            conn.executemany(
                "INSERT INTO messages (chat_id, seq, role, content, status, model, "
                "prompt_tokens, completion_tokens, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", message_rows)
    finally:
        conn.close()


async def _median_ms(call: Callable[[], Awaitable[Any]]) -> float:
    await call()
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return median(times) * 1e3


async def _lookups(store: SQLStore) -> dict[str, float]:
    """Each lookup's median time; on SQLite also the queries these replaced."""
    now = utcnow()
    partial = now - timedelta(days=7, hours=5)  # a range with a partial day at each edge
    db = store.db
    figures = {
        "usage_all_ms": await _median_ms(lambda: store.usage("default")),
        "usage_range_ms": await _median_ms(lambda: store.usage("default", partial,
                                                               now - timedelta(hours=3))),
        "search_common_ms": await _median_ms(lambda: store.search("default", "order")),
        "search_rare_ms": await _median_ms(lambda: store.search("default", "w123")),
        "title_filter_ms": await _median_ms(
            lambda: store.list_chats("default", limit=20, title_contains="refund")),
        "title_filter_every_ms": await _median_ms(
            lambda: store.list_chats("default", limit=20, title_contains="Order")),
        "title_filter_rare_ms": await _median_ms(
            lambda: store.list_chats("default", limit=20, title_contains="Order 4242 ")),
    }
    if store.dialect != "sqlite":
        return figures
    scan = await _median_ms(lambda: db.read(
        lambda conn: usage.scan_report(conn, "default", None, None)))
    ranked = await _median_ms(lambda: db.read(lambda conn: conn.execute(
        _RANK_EVERY_MATCH, {"q": fulltext.fts5_query("order"), "tenant": "default"}).all()))
    like = (chats.select().where(chats.c.tenant_id == "default", chats.c.archived_at.is_(None),
                                 chats.c.title.ilike("%refund%"))
            .order_by(chats.c.created_at.desc(), chats.c.id.desc()).limit(20))
    liked = await _median_ms(lambda: db.read(lambda conn: conn.execute(like).all()))
    figures.update(before_usage_all_ms=scan, before_search_common_ms=ranked,
                   before_title_filter_ms=liked)
    return figures


async def _turns(url: str, base_url: str, chats: int, count: int) -> dict[str, float]:
    """Median turn time on ``count`` of the ``chats``: first on each (cold), then again
    (cached)."""
    cold, cached = [], []
    async with AsyncChatSessions(settings(base_url, url)) as sessions:
        await sessions.send_message(await sessions.create_chat(), "warm-up")
        ids = [f"chat-{i:06d}" for i in random.Random(7).sample(range(chats), count)]
        for chat_id in ids:
            started = time.perf_counter()
            await sessions.send_message(chat_id, "Where is it now?")
            cold.append(time.perf_counter() - started)
        for chat_id in ids:
            started = time.perf_counter()
            await sessions.send_message(chat_id, "And when will it arrive?")
            cached.append(time.perf_counter() - started)
    return {"turn_cold_ms": median(cold) * 1e3, "turn_cached_ms": median(cached) * 1e3}


async def _postgresql(url: str, count: int, per_chat: int,
                      log: Callable[[str], None]) -> dict[str, float]:
    """The lookups on PostgreSQL, the same rows seeded by COPY (prefixed ``pg_``)."""
    store = SQLStore(url)
    await store.open()  # the schema, at the newest revision
    try:
        await seed_postgresql(url, count, per_chat)
        rebuilt = sa.text("DELETE FROM usage_counters")
        await store.db.write(lambda conn: (
            conn.execute(rebuilt), conn.execute(usage.recount("postgresql", sa.true()))))
        log("lookups: PostgreSQL seeded; timing the lookups")
        return {f"pg_{name}": value for name, value in (await _lookups(store)).items()}
    finally:
        await store.close()


def run(base_url: str, workdir: Path, count: int, per_chat: int, turns: int,
        log: Callable[[str], None], pg_url: str | None = None) -> dict[str, Any]:
    path = workdir / "lookups.db"
    url = f"sqlite:///{path}"
    log(f"lookups: seeding {count} chats x {per_chat} messages")
    started = time.perf_counter()
    store = SQLStore(url)

    async def prepare() -> dict[str, float]:
        await store.open()  # the schema, at the newest revision
        await store.close()
        seed(path, count, per_chat)
        await store.open()
        rebuilt = sa.text("DELETE FROM usage_counters")
        await store.db.write(lambda conn: (conn.execute(rebuilt),
                                           conn.execute(usage.recount("sqlite", sa.true()))))
        await store.db.write(fulltext.catch_up)
        seeded = time.perf_counter() - started
        log(f"lookups: seeded in {seeded:.0f} s; timing the lookups")
        try:
            return {"seed_s": seeded, **await _lookups(store)}
        finally:
            await store.close()

    results = asyncio.run(prepare())
    if pg_url is not None:
        log(f"lookups: PostgreSQL, seeding {count} chats x {per_chat} messages")
        results.update(asyncio.run(_postgresql(pg_url, count, per_chat, log)))
    log("lookups: cold and cached turns")
    results.update(asyncio.run(_turns(url, base_url, count, turns)))
    ratios = [
        Ratio("lookup_usage_budget", results["usage_all_ms"] / BUDGET_MS, 1.0, "lower",
              f"usage() over all time at {count} chats / {BUDGET_MS:g} ms"),
        Ratio("lookup_usage_range_budget", results["usage_range_ms"] / BUDGET_MS, 1.0,
              "lower", f"usage() over 7 days with partial edge days / {BUDGET_MS:g} ms"),
        Ratio("lookup_search_budget", results["search_common_ms"] / BUDGET_MS, 1.0, "lower",
              f"search for a word in every message, first page / {BUDGET_MS:g} ms"),
        Ratio("lookup_title_budget", results["title_filter_ms"] / BUDGET_MS, 1.0, "lower",
              f"list_chats(title_contains=) for a word in 1/10 of titles / {BUDGET_MS:g} ms"),
        *[Ratio(f"lookup_pg_{name}_budget", results[f"pg_{figure}"] / BUDGET_MS, 1.0,
                "lower", f"PostgreSQL: {figure.removesuffix('_ms')} / {BUDGET_MS:g} ms")
          for name, figure in (("usage", "usage_all_ms"), ("usage_range", "usage_range_ms"),
                               ("search", "search_common_ms"), ("title", "title_filter_ms"))
          if f"pg_{figure}" in results],
        Ratio("lookup_cold_turn", results["turn_cold_ms"] / results["turn_cached_ms"], 2.0,
              "lower", "turn on a chat read from the database / turn on a cached chat"),
    ]
    return {
        "title": "Lookups at scale",
        "sizes": {"chats": count, "messages": count * per_chat, "turns": turns},
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| figure | ms |", "| --- | ---: |"]
    lines += [f"| {name.removesuffix('_ms')} | {value:.2f} |"
              for name, value in results.items() if name.endswith("_ms")]
    return [*lines, "", f"Seeded in {results['seed_s']:.0f} s."]
