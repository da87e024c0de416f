"""The library building blocks the OpenAI-compatible API stands on: messages added or
deleted outside turns, forks, and per-call turn options; on SQLite, PostgreSQL, memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chatsessions import AsyncChatSessions, ChatNotFound, InvalidInput
from chatsessions.errors import ChatMoved
from chatsessions.testing import FakeLLMServer
from chatsessions.types import Role, TurnStatus


@pytest.fixture(params=["sql", "memory"])
async def chats(request: pytest.FixtureRequest,
                settings_kwargs: dict[str, object]) -> AsyncIterator[AsyncChatSessions]:
    kwargs = dict(settings_kwargs)
    if request.param == "memory":
        kwargs["database_url"] = "memory://"
    async with AsyncChatSessions(**kwargs) as sessions:  # type: ignore[arg-type]
        yield sessions


async def test_append_and_delete_messages(chats: AsyncChatSessions,
                                          fake_llm: FakeLLMServer) -> None:
    chat_id = await chats.create_chat("Be kind.")
    added = await chats.append_messages(chat_id, [(Role.USER, "q1"), (Role.ASSISTANT, "a1")])
    assert [(m.seq, m.role, m.status) for m in added] == [
        (1, Role.USER, TurnStatus.OK), (2, Role.ASSISTANT, TurnStatus.OK)]
    await chats.send(chat_id, "q2")
    assert fake_llm.chat_histories()[-1][1:] == [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"}]

    assert await chats.delete_message(chat_id, 2) is True
    assert await chats.delete_message(chat_id, 2) is False
    answer = await chats.send(chat_id, "q3")
    assert answer.seq == 6  # seqs are never reused
    assert [m["content"] for m in fake_llm.chat_histories()[-1][1:]] == [
        "q1", "q2", fake_llm.answer_for(fake_llm.chat_histories()[0]), "q3"]

    with pytest.raises(InvalidInput):
        await chats.append_messages(chat_id, [(Role.SYSTEM, "no")])
    with pytest.raises(InvalidInput):
        await chats.append_messages(chat_id, [(Role.USER, "")])
    with pytest.raises(ChatNotFound):
        await chats.for_tenant("other").append_messages(chat_id, [(Role.USER, "x")])
    with pytest.raises(ChatNotFound):
        await chats.for_tenant("other").delete_message(chat_id, 1)
    assert len(await chats.history(chat_id)) == 6


async def test_fork_copies_the_ok_history_up_to_a_seq(chats: AsyncChatSessions,
                                                      fake_llm: FakeLLMServer) -> None:
    chat_id = await chats.create_chat("Fork me.", metadata={"k": 1})
    first = await chats.send(chat_id, "one")
    await chats.send(chat_id, "two")
    fork_id = await chats.fork_chat(chat_id, up_to_seq=first.seq)
    fork = await chats.get_chat(fork_id)
    assert (fork.parent_id, fork.forked_at_seq, fork.message_count) == (chat_id, 2, 2)
    assert (fork.system_prompt, fork.metadata) == ("Fork me.", {"k": 1})
    assert [m.content for m in await chats.history(fork_id)] == [
        "Fork me.", "one", first.content]
    assert fork.completion_tokens == first.completion_tokens
    answer = await chats.send(fork_id, "three")
    assert answer.seq == 4
    assert [m["content"] for m in fake_llm.chat_histories()[-1][1:]] == [
        "one", first.content, "three"]
    assert len(await chats.history(chat_id)) == 5  # the source is untouched
    with pytest.raises(InvalidInput):
        await chats.fork_chat(chat_id, up_to_seq=99)
    with pytest.raises(ChatNotFound):
        await chats.for_tenant("other").fork_chat(chat_id, up_to_seq=1)


async def test_turn_options(chats: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await chats.create_chat("Stored prompt.")
    await chats.send(chat_id, "hi", system_prompt="This call only.")
    assert fake_llm.chat_histories()[-1][0] == {"role": "system", "content": "This call only."}
    assert (await chats.get_chat(chat_id)).system_prompt == "Stored prompt."
    await chats.send(chat_id, "again")
    assert fake_llm.chat_histories()[-1][0]["content"] == "Stored prompt."

    with pytest.raises(ChatMoved):
        await chats.send(chat_id, "from an old point", if_message_count=2)
    assert len(fake_llm.requests) == 2
    assert (await chats.get_chat(chat_id)).message_count == 4
    parts = [item async for item in chats.stream(chat_id, "from the tip", if_message_count=4)]
    assert parts[-1].seq == 6  # type: ignore[union-attr]
