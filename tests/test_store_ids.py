"""A taken chat id is the same typed error on every store, through the public API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatsessions import AsyncChatSessions, ChatExists
from chatsessions.testing import FakeLLMServer


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_database_url"))
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'c.db'}"


@pytest.fixture
async def chats(store_url: str, fake_llm: FakeLLMServer) -> AsyncIterator[AsyncChatSessions]:
    async with AsyncChatSessions(
            database_url=store_url, backend="openai", model="fake-model",
            openai_base_url=fake_llm.base_url, openai_api_key="test", max_retries=0,
            auto_title=False) as sessions:
        yield sessions


async def test_creating_a_taken_id_raises_chat_exists(chats: AsyncChatSessions) -> None:
    chat_id = f"taken-{uuid.uuid4()}"
    assert await chats.create_chat("first", chat_id=chat_id) == chat_id
    with pytest.raises(ChatExists) as raised:
        await chats.create_chat("second", chat_id=chat_id)
    assert raised.value.chat_id == chat_id
    assert (await chats.get_chat(chat_id)).system_prompt == "first"


async def test_a_taken_id_is_taken_for_every_tenant(chats: AsyncChatSessions) -> None:
    chat_id = f"taken-{uuid.uuid4()}"
    await chats.for_tenant("acme").create_chat(chat_id=chat_id)
    with pytest.raises(ChatExists):
        await chats.for_tenant("globex").create_chat(chat_id=chat_id)


async def test_a_new_idempotency_key_on_a_taken_id_raises_chat_exists(
        chats: AsyncChatSessions) -> None:
    """Not a replay (the key is new), so not mistaken for one nor for a race on the key."""
    chat_id = f"taken-{uuid.uuid4()}"
    await chats.create_chat("first", chat_id=chat_id, idempotency_key="k1")
    assert await chats.create_chat("first", chat_id=chat_id, idempotency_key="k1") == chat_id
    with pytest.raises(ChatExists):
        await chats.create_chat("first", chat_id=chat_id, idempotency_key="k2")


async def test_importing_over_a_taken_id_raises_chat_exists(chats: AsyncChatSessions) -> None:
    chat_id = f"taken-{uuid.uuid4()}"
    await chats.create_chat("kept", chat_id=chat_id)
    exported = await chats.export_chat(chat_id)
    with pytest.raises(ChatExists):
        await chats.import_chat(exported, keep_id=True)
    other = await chats.create_chat("another")
    with pytest.raises(ChatExists):
        await chats.import_chat({**exported, "chat": {**exported["chat"], "id": other}},
                                keep_id=True)
    assert (await chats.get_chat(other)).system_prompt == "another"
    assert await chats.import_chat(exported) != chat_id  # without keep_id: a new id
