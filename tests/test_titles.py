"""Automatic titles: written by the chat's own model after its first exchange, in the
background, never over a title the user set; not a message, not a turn, not usage."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest

from chatsessions import AsyncChatSessions
from chatsessions.engine.titles import clean_title, title_request
from chatsessions.testing import FakeLLMServer, Fault
from chatsessions.types import Role
from tests.conftest import LiveServer
from tests.test_cli import cli_env, run


@pytest.fixture
def settings_kwargs(settings_kwargs: dict[str, object]) -> dict[str, object]:
    """Titles on, and a model timeout longer than the title call held back below."""
    return {**settings_kwargs, "auto_title": True, "request_timeout": 10.0}


def expected_title(user: str, answer: str) -> str | None:
    return clean_title(FakeLLMServer.answer_for(title_request(user, answer)))


def hold_back_title(fake: FakeLLMServer, seconds: float) -> None:
    """The next model call (the turn) answers at once, the one after (the title) waits."""
    fake.inject(Fault.timeout(0.0))
    fake.inject(Fault.timeout(seconds))


async def wait_for_title(sessions: AsyncChatSessions, chat_id: str) -> str | None:
    deadline = time.monotonic() + 30
    while (title := (await sessions.get_chat(chat_id)).title) is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.05)
    return title


async def test_first_exchange_titles_the_chat_off_the_critical_path(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    hold_back_title(fake_llm, 1.5)
    started = time.perf_counter()
    answer = await sessions.send(chat_id, "Where is my parcel?")
    assert time.perf_counter() - started < 1.0  # the send did not wait for the title
    assert (await sessions.get_chat(chat_id)).title is None

    title = await wait_for_title(sessions, chat_id)
    assert title is not None
    assert title == expected_title("Where is my parcel?", answer.content)
    asked = fake_llm.requests[-1]
    assert asked.messages == title_request("Where is my parcel?", answer.content)
    assert asked.model == "fake-model"  # the chat's own model

    # Not a message, not a turn, not usage: the title's tokens are counted nowhere.
    chat = await sessions.get_chat(chat_id)
    history = await sessions.history(chat_id, include_failed=True)
    assert [m.role for m in history] == [Role.SYSTEM, Role.USER, Role.ASSISTANT]
    assert (chat.message_count, chat.prompt_tokens, chat.completion_tokens) == (
        2, answer.prompt_tokens, answer.completion_tokens)
    report = await sessions.usage()
    assert (report.turns, report.prompt_tokens, report.completion_tokens) == (
        1, answer.prompt_tokens, answer.completion_tokens)

    # Only the first exchange is titled: a cleared title stays cleared.
    await sessions.update_chat(chat_id, title=None)
    calls = len(fake_llm.requests)
    await sessions.send(chat_id, "It was ordered last week.")
    await sessions.close()  # waits for any title still being written
    assert len(fake_llm.requests) == calls + 1
    assert (await sessions.get_chat(chat_id)).title is None


async def test_a_title_set_meanwhile_is_never_overwritten(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    hold_back_title(fake_llm, 1.0)
    await sessions.send(chat_id, "I would like a refund, please.")
    deadline = time.monotonic() + 30
    while len(fake_llm.requests) < 2:  # the title call is with the model now
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await sessions.update_chat(chat_id, title="Refund for order 42")
    await sessions.close()  # the title call finishes and finds the chat titled
    assert len(fake_llm.requests) == 2
    assert (await sessions.get_chat(chat_id)).title == "Refund for order 42"


async def test_titled_chats_and_failed_turns_cost_no_title_call(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    titled = await sessions.create_chat(title="Given")
    await sessions.send(titled, "Hello")
    untitled = await sessions.create_chat()
    fake_llm.inject(Fault.status(400))
    with pytest.raises(Exception, match="400"):
        await sessions.send(untitled, "Hello")
    await sessions.close()
    assert len(fake_llm.requests) == 2
    assert (await sessions.get_chat(titled)).title == "Given"
    assert (await sessions.get_chat(untitled)).title is None


async def test_a_failed_title_call_only_logs(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    chat_id = await sessions.create_chat()
    fake_llm.inject(Fault.timeout(0.0))
    fake_llm.inject(Fault.status(500))
    with caplog.at_level(logging.WARNING, logger="chatsessions.engine.titles"):
        await sessions.send(chat_id, "Where is my parcel?")
        await sessions.close()
    assert (await sessions.get_chat(chat_id)).title is None
    assert any("no automatic title" in r.getMessage() and chat_id in r.getMessage()
               for r in caplog.records)
    answer = await sessions.send(chat_id, "Still there?")  # the chat is unharmed
    assert answer.content


async def test_close_cancels_a_title_still_being_written(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    chat_id = await sessions.create_chat()
    hold_back_title(fake_llm, 120.0)
    await sessions.send(chat_id, "Where is my parcel?")
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="chatsessions.engine.titles"):
        await sessions.close(title_grace=0.2)
    assert time.perf_counter() - started < 8.0  # cancelled, not left to time out at 10 s
    assert not caplog.records  # cancelled quietly
    assert (await sessions.get_chat(chat_id)).title is None


async def test_auto_title_can_be_turned_off(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    async with AsyncChatSessions(**{**settings_kwargs, "auto_title": False}) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        await chats.send(chat_id, "Where is my parcel?")
    assert len(fake_llm.requests) == 1
    async with AsyncChatSessions(**settings_kwargs) as chats:  # type: ignore[arg-type]
        assert (await chats.get_chat(chat_id)).title is None


def test_title_cleaning() -> None:
    assert clean_title('Title: "Tracking a late parcel."\nMore text') == "Tracking a late parcel"
    assert clean_title("  \n**Refund request**") == "Refund request"
    assert clean_title("one two three four five six seven eight nine ten") == (
        "one two three four five six seven eight")
    assert clean_title("\x07 ") is None
    assert clean_title("") is None


def test_http_send_returns_before_the_title_and_the_title_shows_up(
    live_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        chat = http.post("/chats", json={}).json()
        hold_back_title(fake_llm, 1.5)
        started = time.perf_counter()
        sent = http.post(f"/chats/{chat['id']}/messages", json={"content": "Where is my parcel?"})
        assert sent.status_code == 200
        assert time.perf_counter() - started < 1.0
        assert http.get(f"/chats/{chat['id']}").json()["title"] is None
        deadline = time.monotonic() + 30
        while (title := http.get(f"/chats/{chat['id']}").json()["title"]) is None:
            assert time.monotonic() < deadline, "no title"
            time.sleep(0.05)
        assert title == expected_title("Where is my parcel?", sent.json()["content"])
        # Titles stay editable.
        renamed = http.patch(f"/chats/{chat['id']}", json={"title": "Parcel"}).json()
        assert renamed["title"] == "Parcel"


def test_cli_titles_and_renames(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    env = {**cli_env(tmp_path, fake_llm), "CHATSESSIONS_AUTO_TITLE": "1"}
    chat_id = run(env, "new").stdout.strip()
    sent = run(env, "send", chat_id, "Where is my parcel?")
    assert sent.returncode == 0, sent.stderr
    # The one-shot command waited for the title before it exited.
    shown = run(env, "title", chat_id)
    assert shown.stdout.strip() == expected_title("Where is my parcel?", sent.stdout.strip())
    assert run(env, "title", chat_id, "Parcel questions").returncode == 0
    assert run(env, "title", chat_id).stdout.strip() == "Parcel questions"
    assert "Parcel questions" in run(env, "list").stdout
    assert run(env, "title", chat_id, "--clear").returncode == 0
    assert run(env, "title", chat_id).stdout.strip() == ""
