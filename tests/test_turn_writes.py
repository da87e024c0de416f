"""A turn's two writes as driver statements (store/turn_writes.py), on SQLite and PostgreSQL:
each is all or nothing, and what they write reads back exactly as SQLAlchemy reads it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from chatsessions.errors import DatabaseUnavailable, TurnInterrupted
from chatsessions.store import engines, usage
from chatsessions.store.driver import DriverStatement
from chatsessions.store.engines import AsyncDatabase
from chatsessions.store.schema import chats
from chatsessions.store.sql import SQLStore
from chatsessions.store.statements import BUMP_AND_RELEASE
from chatsessions.types import Chat, Message, Role, ToolCall, TurnStatus, utcnow


@pytest.fixture
async def store(database_url: str) -> Any:
    opened = SQLStore(database_url)
    await opened.open()
    yield opened
    await opened.close()


async def _chat(store: SQLStore) -> Chat:
    now = utcnow()
    chat = Chat(id=f"c-{now.timestamp()}", tenant_id="t", title=None, system_prompt="Be kind.",
                backend="openai", model="m", created_at=now, updated_at=now)
    await store.create_chat(chat)
    return chat


def _answer(chat_id: str, text: str) -> Message:
    return Message(chat_id=chat_id, seq=0, role=Role.ASSISTANT, content=text, model="m",
                   prompt_tokens=11, completion_tokens=7, latency_ms=3,
                   context_messages=2, context_tokens=13)


async def _lease_owner(store: SQLStore, chat_id: str) -> str | None:
    query = sa.select(chats.c.lease_owner).where(chats.c.id == chat_id)
    owner: str | None = await store.db.read(lambda conn: conn.execute(query).scalar_one())
    return owner


def _until() -> Any:
    return utcnow() + timedelta(seconds=30)


async def test_a_turn_writes_its_question_then_its_answer(store: SQLStore) -> None:
    chat = await _chat(store)
    user = await store.begin_turn(chat, "me", _until(), "Where is my order?")
    assert user is not None
    assert user.seq == 1
    leased = await store.get_chat(chat.id, "t")
    assert leased is not None
    assert leased.message_count == 1
    assert await _lease_owner(store, chat.id) == "me"
    assert [(m.content, m.status) for m in await store.messages(chat.id)] == [
        ("Where is my order?", TurnStatus.PENDING)]

    stored = await store.complete_turn(user, _answer(chat.id, "On its way."), lease_owner="me")
    assert stored.seq == 2
    rows = await store.messages(chat.id)
    assert [(m.role, m.content, m.status) for m in rows] == [
        (Role.USER, "Where is my order?", TurnStatus.OK),
        (Role.ASSISTANT, "On its way.", TurnStatus.OK)]
    # every field of the answer as written, read back through SQLAlchemy's own types
    assert rows[1] == stored
    after = await store.get_chat(chat.id, "t")
    assert after is not None
    assert (after.message_count, after.prompt_tokens, after.completion_tokens) == (2, 11, 7)
    assert after.updated_at == stored.created_at
    assert await _lease_owner(store, chat.id) is None


async def test_the_next_turn_can_presume_the_chat_as_the_last_one_left_it(
    store: SQLStore,
) -> None:
    """The chat's updated_at, bound by the driver statement, compares equal to itself as
    stored: otherwise every presumed turn would fall back to the slow path."""
    chat = await _chat(store)
    user = await store.begin_turn(chat, "me", _until(), "one")
    assert user is not None
    stored = await store.complete_turn(user, _answer(chat.id, "1"), lease_owner="me")
    seen = await store.get_chat(chat.id, "t")
    assert seen is not None
    assert seen.updated_at == stored.created_at
    second = await store.begin_turn(seen, "me", _until(), "two")
    assert second is not None
    assert second.seq == 3


async def test_begin_writes_nothing_when_the_chat_moved_or_is_leased(store: SQLStore) -> None:
    chat = await _chat(store)
    stale = chat
    user = await store.begin_turn(chat, "me", _until(), "first")
    assert user is not None
    await store.complete_turn(user, _answer(chat.id, "ok"), lease_owner="me")
    assert await store.begin_turn(stale, "me", _until(), "from an old view") is None

    current = await store.get_chat(chat.id, "t")
    assert current is not None
    taken, acquired = await store.try_lease(chat.id, "t", "other", _until())
    assert acquired
    assert taken is not None
    assert await store.begin_turn(taken, "me", _until(), "while another holds it") is None
    assert [m.content for m in await store.messages(chat.id)] == ["first", "ok"]
    assert (await store.get_chat(chat.id, "t")).message_count == 2  # type: ignore[union-attr]


async def test_an_answer_to_a_turn_declared_dead_is_refused_whole(store: SQLStore) -> None:
    chat = await _chat(store)
    user = await store.begin_turn(chat, "me", _until(), "slow one")
    assert user is not None
    await store.mark_interrupted(chat.id, [user.seq])  # what another replica's recovery does
    with pytest.raises(TurnInterrupted):
        await store.complete_turn(user, _answer(chat.id, "too late"), lease_owner="me")
    rows = await store.messages(chat.id)
    assert [(m.content, m.status) for m in rows] == [("slow one", TurnStatus.FAILED)]
    after = await store.get_chat(chat.id, "t")
    assert after is not None
    assert (after.message_count, after.prompt_tokens) == (1, 0)
    assert await _lease_owner(store, chat.id) == "me"  # released by the turn's own ending


def _calling(chat_id: str, *ids: str) -> Message:
    calls = tuple(ToolCall(i, "order_status", '{"order_id": "42"}') for i in ids)
    return replace(_answer(chat_id, ""), tool_calls=calls)


def _output(chat_id: str, call_id: str, text: str) -> Message:
    return Message(chat_id=chat_id, seq=0, role=Role.TOOL, content=text,
                   tool_call_id=call_id)


async def _waiting_for(store: SQLStore, *ids: str) -> Chat:
    """A chat whose last answer called tools ``ids``, as the turn left it."""
    chat = await _chat(store)
    user = await store.begin_turn(chat, "me", _until(), "Where is order 42?")
    assert user is not None
    await store.complete_turn(user, _calling(chat.id, *ids), lease_owner="me")
    seen = await store.get_chat(chat.id, "t")
    assert seen is not None
    return seen


@pytest.mark.parametrize("calls", [1, 3])
async def test_a_tool_round_takes_the_lease_then_writes_outputs_and_answer_at_once(
    store: SQLStore, calls: int,
) -> None:
    ids = [f"call_{i}" for i in range(calls)]
    seen = await _waiting_for(store, *ids)
    assert await store.begin_round(seen, "me", _until())
    assert await _lease_owner(store, seen.id) == "me"
    assert (await store.get_chat(seen.id, "t")).message_count == 2  # type: ignore[union-attr]
    outputs = [replace(_output(seen.id, i, f"order {i} is in Leeds"),
                       idempotency_key="k" if i == "call_0" else None) for i in ids]
    stored = await store.complete_round(seen.id, outputs, _answer(seen.id, "In Leeds."),
                                        lease_owner="me")
    assert [m.seq for m in stored] == list(range(3, 4 + calls))
    rows = await store.messages(seen.id)
    assert rows[2:] == stored  # every field as written, read back through SQLAlchemy
    assert [(m.role, m.tool_call_id) for m in rows[2:]] == [
        *((Role.TOOL, i) for i in ids), (Role.ASSISTANT, None)]
    assert (await store.message_by_idempotency_key(seen.id, "k")) == stored[0]
    after = await store.get_chat(seen.id, "t")
    assert after is not None
    assert (after.message_count, after.prompt_tokens, after.completion_tokens) == (
        3 + calls, 22, 14)
    assert after.updated_at == stored[-1].created_at  # the next turn can presume it
    assert await _lease_owner(store, seen.id) is None
    counted = await store.usage("t")
    assert [(u.turns, u.prompt_tokens, u.completion_tokens) for u in counted] == [(2, 22, 14)]
    assert counted == await store.db.read(lambda conn: usage.scan_report(conn, "t", None, None))
    assert await store.begin_turn(after, "me", _until(), "Thanks!") is not None


async def test_a_tool_round_takes_no_lease_on_a_chat_that_moved_or_is_held(
    store: SQLStore,
) -> None:
    seen = await _waiting_for(store, "call_1")
    stale = replace(seen, message_count=seen.message_count - 1)
    assert not await store.begin_round(stale, "me", _until())
    assert not await store.begin_round(replace(seen, history_version=seen.history_version + 1),
                                       "me", _until())
    assert await _lease_owner(store, seen.id) is None
    _taken, acquired = await store.try_lease(seen.id, "t", "other", _until())
    assert acquired
    assert not await store.begin_round(seen, "me", _until())
    assert await _lease_owner(store, seen.id) == "other"


async def test_a_tool_round_whose_lease_was_taken_over_writes_nothing(
    store: SQLStore,
) -> None:
    """Another replica took the chat after our lease expired (and may store the same
    outputs itself): our round's write is refused whole."""
    seen = await _waiting_for(store, "call_1")
    assert await store.begin_round(seen, "me", utcnow() - timedelta(seconds=1))
    _taken, acquired = await store.try_lease(seen.id, "t", "other", _until())
    assert acquired
    with pytest.raises(TurnInterrupted):
        await store.complete_round(seen.id, [_output(seen.id, "call_1", "in Leeds")],
                                   _answer(seen.id, "In Leeds."), lease_owner="me")
    assert len(await store.messages(seen.id)) == 2
    after = await store.get_chat(seen.id, "t")
    assert after is not None
    assert (after.message_count, after.prompt_tokens) == (2, 11)
    assert await _lease_owner(store, seen.id) == "other"
    assert [u.turns for u in await store.usage("t")] == [1]


def test_a_driver_statement_fills_fixed_binds_and_converts_values() -> None:
    statement = DriverStatement.compile(BUMP_AND_RELEASE, sqlite.dialect())
    assert statement.sql.count("?") == len(statement.names)
    now = utcnow()
    args = statement.args({"p_chat": "c", "p_prompt": 1, "p_completion": 2, "p_now": now,
                           "p_owner": None})
    by_name = dict(zip(statement.names, args, strict=True))
    assert by_name["message_count_1"] == 1  # the literal of ``message_count + 1``
    assert by_name["p_now"] == now.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLite's text form
    assert by_name["p_owner"] is None
    with pytest.raises(KeyError):
        statement.args({"p_chat": "c"})


@pytest.fixture
async def pg_driver(pg_database_url: str) -> AsyncIterator[AsyncDatabase]:
    """The PostgreSQL store's database, opened, for the driver-connection tests."""
    store = SQLStore(pg_database_url)
    await store.open()
    db = store.db
    assert isinstance(db, AsyncDatabase)
    yield db
    await store.close()


async def test_postgres_driver_connections_are_reused_unless_a_call_was_cut(
    pg_driver: AsyncDatabase,
) -> None:
    await pg_driver.driver(lambda conn: conn.fetchval("SELECT 1"))
    kept = pg_driver._idle[-1][1]
    with pytest.raises(asyncpg.PostgresError):  # refused by the server: still usable
        await pg_driver.driver(lambda conn: conn.fetchval("SELECT 1/0"))
    assert pg_driver._idle[-1][1] is kept
    assert await pg_driver.driver(lambda conn: conn.fetchval("SELECT 2")) == 2

    call = asyncio.ensure_future(pg_driver.driver(lambda conn: conn.fetchval("SELECT pg_sleep(5)")))
    await asyncio.sleep(0.2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert all(raw is not kept for _pooled, raw, _since in pg_driver._idle)
    assert await pg_driver.driver(lambda conn: conn.fetchval("SELECT 3")) == 3


async def test_postgres_driver_connections_the_server_closed_are_replaced_before_use(
    pg_driver: AsyncDatabase, pg_database_url: str
) -> None:
    """After a server restart every kept connection is dead: the next call notices it
    without a round trip (the socket is closed) and opens a fresh one, so it succeeds."""
    await asyncio.gather(*(pg_driver.driver(lambda conn: conn.fetchval("SELECT pg_sleep(0.1)"))
                           for _ in range(3)))
    assert len(pg_driver._idle) == 3
    await terminate_others(pg_database_url)
    await asyncio.sleep(0.1)
    assert await pg_driver.driver(lambda conn: conn.fetchval("SELECT 4")) == 4
    assert len(pg_driver._idle) == 1
    assert pg_driver.outage.since is None  # nobody was told the database went away


async def test_postgres_driver_connections_are_all_dropped_when_one_dies_mid_call(
    pg_driver: AsyncDatabase, pg_database_url: str
) -> None:
    """A connection killed under a statement (a restart's shutdown): the caller gets
    DatabaseUnavailable, and every kept connection is dropped, as SQLAlchemy's pool does."""
    await asyncio.gather(*(pg_driver.driver(lambda conn: conn.fetchval("SELECT pg_sleep(0.1)"))
                           for _ in range(3)))
    assert len(pg_driver._idle) == 3
    sleeping = asyncio.create_task(
        pg_driver.driver(lambda conn: conn.fetchval("SELECT pg_sleep(5)")))
    await asyncio.sleep(0.3)
    await terminate_others(pg_database_url, "SELECT pg_sleep(5)")
    with pytest.raises(DatabaseUnavailable):
        await sleeping
    assert pg_driver._idle == []
    assert pg_driver.outage.since is not None
    assert await pg_driver.driver(lambda conn: conn.fetchval("SELECT 4")) == 4
    assert pg_driver.outage.since is None  # a call started during the outage succeeded


async def terminate_others(url: str, query: str | None = None) -> None:
    """Terminate the database's other sessions (those running ``query``, if given)."""
    killer = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
    try:
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND ($1::text IS NULL OR query = $1)", query)
    finally:
        await killer.close()


async def test_postgres_driver_connections_idle_too_long_are_replaced(
    pg_driver: AsyncDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await pg_driver.driver(lambda conn: conn.fetchval("SELECT pg_backend_pid()"))
    assert await pg_driver.driver(lambda conn: conn.fetchval("SELECT pg_backend_pid()")) == first
    monkeypatch.setattr(engines, "IDLE_RECYCLE_S", 0.0)
    assert await pg_driver.driver(lambda conn: conn.fetchval("SELECT pg_backend_pid()")) != first
    assert len(pg_driver._idle) == 1
