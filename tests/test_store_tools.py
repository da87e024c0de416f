"""Tool calls and tool definitions survive the store on every engine: an answer's calls
written by a turn's driver statements, outputs appended, chat tools set and cleared, forks
and imports copying them, and the migration adding and removing their columns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from chatsessions import migrations
from chatsessions.store.base import Store, open_store
from chatsessions.types import Chat, Message, Role, Tool, ToolCall, utcnow
from tests.conftest import _truncate

LOOKUP = Tool("order_status", "Where an order is.",
              {"type": "object", "properties": {"order_id": {"type": "string"}},
               "required": ["order_id"]})
CALLS = (ToolCall("call_1", "order_status", '{"order_id": "4417"}'),
         ToolCall("call_2", "order_status", '{"order_id": "ünïcode \\"quoted\\""}'))
TOOL_COLUMNS = {"messages.tool_calls", "messages.tool_call_id", "chats.tools"}


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both SQL engines, as ``database_url`` gives them, and the memory store."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chats.db'}"
    url: str = request.getfixturevalue("pg_database_url")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = open_store(store_url)
    await opened.open()
    yield opened
    await opened.close()


async def _chat(store: Store, **fields: object) -> Chat:
    now = utcnow()
    chat = Chat(id=f"c-{now.timestamp()}", tenant_id="t", system_prompt="Help.",
                backend="openai", model="m", created_at=now, updated_at=now,
                **fields)  # type: ignore[arg-type]
    await store.create_chat(chat)
    return chat


async def _tool_round(store: Store, chat: Chat) -> list[Message]:
    """A turn whose answer calls two tools (the turn's own writes), then the outputs."""
    user = await store.begin_turn(chat, "me", utcnow() + timedelta(seconds=30),
                                  "Where is order 4417?")
    assert user is not None
    answer = Message(chat.id, 0, Role.ASSISTANT, "", model="m", prompt_tokens=9,
                     completion_tokens=4, tool_calls=CALLS)
    await store.complete_turn(user, answer, lease_owner="me")
    outputs = [Message(chat.id, 0, Role.TOOL, f"output of {call.id}", tool_call_id=call.id)
               for call in CALLS]
    await store.append_messages(chat.id, outputs)
    return await store.messages(chat.id)


async def test_tool_calls_and_outputs_read_back_as_written(store: Store) -> None:
    chat = await _chat(store)
    rows = await _tool_round(store, chat)
    assert [m.role for m in rows] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.TOOL]
    assert rows[0].tool_calls is None
    assert rows[0].tool_call_id is None
    assert rows[1].tool_calls == CALLS
    assert [m.tool_call_id for m in rows[2:]] == ["call_1", "call_2"]
    assert rows[1].as_openai() == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}}
                       for c in CALLS]}
    assert rows[2].as_openai() == {"role": "tool", "content": "output of call_1",
                                   "tool_call_id": "call_1"}


async def test_an_answer_with_no_calls_differs_from_one_with_an_empty_list(
    store: Store,
) -> None:
    chat = await _chat(store)
    await store.append_messages(chat.id, [
        Message(chat.id, 0, Role.ASSISTANT, "plain"),
        Message(chat.id, 0, Role.ASSISTANT, "empty", tool_calls=()),
    ])
    plain, empty = await store.messages(chat.id)
    assert plain.tool_calls is None
    assert empty.tool_calls == ()


async def test_chat_tools_are_stored_updated_and_cleared(store: Store) -> None:
    chat = await _chat(store, tools=(LOOKUP,))
    assert (await store.get_chat(chat.id, "t")).tools == (LOOKUP,)  # type: ignore[union-attr]
    other = Tool("cancel_order", "", {"type": "object", "properties": {}})
    updated = await store.update_chat(chat.id, "t", {"tools": (LOOKUP, other)})
    assert updated is not None
    assert updated.tools == (LOOKUP, other)
    assert (await store.list_chats("t"))[0].tools == (LOOKUP, other)
    cleared = await store.update_chat(chat.id, "t", {"tools": ()})
    assert cleared is not None
    assert cleared.tools == ()
    assert (await store.get_chat(chat.id, "t")).tools == ()  # type: ignore[union-attr]


async def test_a_fork_and_an_import_keep_calls_outputs_and_tools(store: Store) -> None:
    chat = await _chat(store, tools=(LOOKUP,))
    rows = await _tool_round(store, chat)
    source = await store.get_chat(chat.id, "t")
    assert source is not None
    fork = Chat(id=chat.id + "-fork", tenant_id="t", system_prompt="Help.", backend="openai",
                model="m", parent_id=chat.id, tools=source.tools)
    await store.fork_chat(fork, up_to_seq=rows[-1].seq)
    copied = await store.messages(fork.id)
    assert [(m.tool_calls, m.tool_call_id) for m in copied] == [
        (m.tool_calls, m.tool_call_id) for m in rows]
    assert (await store.get_chat(fork.id, "t")).tools == (LOOKUP,)  # type: ignore[union-attr]

    imported = Chat(id=chat.id + "-import", tenant_id="t", system_prompt="Help.",
                    backend="openai", model="m", message_count=len(rows), tools=(LOOKUP,))
    await store.import_chat(imported, rows)
    again = await store.messages(imported.id)
    assert [(m.role, m.tool_calls, m.tool_call_id) for m in again] == [
        (m.role, m.tool_calls, m.tool_call_id) for m in rows]


def _migrate(url: str, revision: str, *, down: bool = False) -> set[str]:
    """Move the schema to ``revision``; the tool columns present afterwards."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)
            inspector = sa.inspect(conn)
            present = ({f"messages.{c['name']}" for c in inspector.get_columns("messages")}
                       | {f"chats.{c['name']}" for c in inspector.get_columns("chats")})
    finally:
        engine.dispose()
    return present & TOOL_COLUMNS


async def test_the_migration_removes_and_restores_the_tool_columns(database_url: str) -> None:
    opened = open_store(database_url)
    await opened.open()  # at the newest revision
    chat = await _chat(opened)
    await opened.append_messages(chat.id, [Message(chat.id, 0, Role.USER, "kept")])
    await opened.close()
    assert _migrate(database_url, "0005", down=True) == set()
    assert _migrate(database_url, "head") == TOOL_COLUMNS
    await opened.open()
    try:
        (kept,) = await opened.messages(chat.id)
        assert (kept.content, kept.tool_calls, kept.tool_call_id) == ("kept", None, None)
        assert (await opened.get_chat(chat.id, "t")).tools == ()  # type: ignore[union-attr]
    finally:
        await opened.close()
