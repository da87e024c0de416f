"""What the service and the CLI read through the public API: paged messages, one message,
a health check and the Markdown export, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy.exc

from chatsessions import (
    AsyncChatSessions,
    BackendError,
    ChatNotFound,
    ChatSessions,
    DatabaseUnavailable,
    InvalidInput,
    Role,
    TurnStatus,
)
from chatsessions.testing import FakeLLMServer, Fault


async def _chat_with_a_failed_turn(sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> str:
    """seq 1-2: a turn; 3: a failed question; 4-5: a turn; 6 replaced by 7 (regenerate)."""
    chat_id = await sessions.create_chat("Be brief.", title="reading")
    await sessions.send(chat_id, "one")
    fake_llm.inject(Fault.status(500))
    with pytest.raises(BackendError):
        await sessions.send(chat_id, "two fails")
    await sessions.send(chat_id, "three")
    await sessions.regenerate(chat_id)
    return chat_id


async def test_messages_page_through_every_stored_message(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await _chat_with_a_failed_turn(sessions, fake_llm)
    everything = await sessions.messages(chat_id, limit=None)
    assert [m.seq for m in everything] == [1, 2, 3, 4, 5, 6]
    assert [m.status for m in everything] == [
        TurnStatus.OK, TurnStatus.OK, TurnStatus.FAILED, TurnStatus.OK, TurnStatus.REPLACED,
        TurnStatus.OK]
    # the same rows history() gives with everything included, without the system prompt
    assert everything == (await sessions.history(chat_id, include_failed=True))[1:]

    pages, after = [], 0
    while page := await sessions.messages(chat_id, after_seq=after, limit=4):
        pages.append([m.seq for m in page])
        after = page[-1].seq
    assert pages == [[1, 2, 3, 4], [5, 6]]
    assert await sessions.messages(chat_id) == everything  # the default page holds them
    assert await sessions.messages(chat_id, after_seq=6) == []


async def test_get_message(sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await _chat_with_a_failed_turn(sessions, fake_llm)
    failed = await sessions.get_message(chat_id, 3)
    assert failed is not None
    assert (failed.seq, failed.role, failed.content, failed.status) == (
        3, Role.USER, "two fails", TurnStatus.FAILED)
    replaced = await sessions.get_message(chat_id, 5)
    assert replaced is not None
    assert replaced.status is TurnStatus.REPLACED
    for missing in (0, -1, 7, 10**6):
        assert await sessions.get_message(chat_id, missing) is None
    assert await sessions.delete_message(chat_id, 4)
    assert await sessions.get_message(chat_id, 4) is None
    assert (await sessions.get_message(chat_id, 5)) == replaced


async def test_reading_is_confined_to_the_tenant(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    await sessions.send(chat_id, "private")
    other = sessions.for_tenant("someone-else")
    for read in (other.messages(chat_id), other.get_message(chat_id, 1),
                 other.get_message(chat_id, 0), other.export_markdown(chat_id),
                 sessions.messages("no-such-chat"), sessions.get_message("no-such-chat", 1)):
        with pytest.raises(ChatNotFound):
            await read
    assert len(await sessions.messages(chat_id)) == 2


@pytest.mark.parametrize("kwargs", [{"after_seq": -1}, {"limit": 0}, {"limit": -5}])
async def test_bad_pages_are_refused(sessions: AsyncChatSessions, kwargs: dict[str, int]) -> None:
    chat_id = await sessions.create_chat()
    with pytest.raises(InvalidInput):
        await sessions.messages(chat_id, **kwargs)


async def test_ping(sessions: AsyncChatSessions, database_url: str, tmp_path: Path) -> None:
    await sessions.ping()
    # a directory is no SQLite file (one that cannot be opened: the database is away, as
    # guarantee 6 says); a database that does not exist is no PostgreSQL one (the driver's
    # own error: no outage, a wrong URL)
    if database_url.startswith("sqlite"):
        broken, expected = f"sqlite:///{tmp_path}", DatabaseUnavailable
    else:
        broken = database_url.rsplit("/", 1)[0] + "/no_such_database"
        expected = sqlalchemy.exc.DBAPIError
    with pytest.raises(expected):
        await AsyncChatSessions(database_url=broken).ping()


async def test_export_markdown(sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await _chat_with_a_failed_turn(sessions, fake_llm)
    text = await sessions.export_markdown(chat_id)
    history = await sessions.history(chat_id, include_failed=True)
    assert text.startswith("# reading\n")
    assert f"- id: `{chat_id}`" in text
    assert text.count("\n## ") == len(history)  # the system prompt and every stored message
    assert "## User (failed: " in text
    assert "## Assistant (replaced" in text
    positions = [text.index(m.content) for m in history]
    assert positions == sorted(positions)


def test_the_sync_twins(database_url: str, fake_llm: FakeLLMServer) -> None:
    with ChatSessions(database_url=database_url, backend="openai", model="fake-model",
                      openai_base_url=fake_llm.base_url, openai_api_key="test",
                      auto_title=False) as chats:
        chat_id = chats.create_chat(title="sync")
        answer = chats.send(chat_id, "hello")
        assert [m.seq for m in chats.messages(chat_id, limit=1)] == [1]
        assert chats.messages(chat_id, after_seq=1) == [answer]
        assert chats.get_message(chat_id, 2) == answer
        assert chats.get_message(chat_id, 3) is None
        chats.ping()
        assert answer.content in chats.export_markdown(chat_id)
