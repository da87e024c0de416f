"""The synchronous facade, used exactly the way the tutorial used its functions."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chatsessions import ChatNotFound, ChatSessions
from chatsessions.prompts import DEMO_CHATS
from chatsessions.testing import FakeLLMServer


@pytest.fixture
def chats(settings_kwargs: dict[str, object]) -> ChatSessions:
    sessions = ChatSessions(**settings_kwargs)  # type: ignore[arg-type]
    yield sessions  # type: ignore[misc]
    sessions.close()


def test_tutorial_verbatim(chats: ChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id1 = chats.create_chat()
    first = chats.send_message(chat_id1, DEMO_CHATS[0][0])
    follow = chats.send_message(chat_id1, DEMO_CHATS[0][1])
    assert first == FakeLLMServer.answer_for(fake_llm.chat_histories()[0])
    assert follow == FakeLLMServer.answer_for(fake_llm.chat_histories()[1])
    with pytest.raises(ValueError, match="Chat session not found!"):
        chats.send_message("nope", "hi")
    with pytest.raises(ChatNotFound):
        chats.history("nope")


def test_streaming_is_a_plain_iterator(chats: ChatSessions) -> None:
    chat_id = chats.create_chat()
    deltas = list(chats.stream_message(chat_id, "stream me"))
    assert len(deltas) > 1
    assert chats.history(chat_id)[-1].content == "".join(deltas)


def test_breaking_out_of_a_stream_fails_the_turn_cleanly(chats: ChatSessions) -> None:
    chat_id = chats.create_chat()
    for _ in chats.stream_message(chat_id, "one two three four five"):
        break
    rows = chats.history(chat_id, include_failed=True)
    assert rows[1].status.value == "failed"
    chats.send_message(chat_id, "works again")


def test_usable_from_many_threads(chats: ChatSessions, fake_llm: FakeLLMServer) -> None:
    ids = [chats.create_chat() for _ in range(4)]
    errors: list[BaseException] = []

    def talk(chat_id: str) -> None:
        try:
            for n in range(3):
                chats.send_message(chat_id, f"{chat_id} turn {n}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=talk, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for chat_id in ids:
        history = chats.history(chat_id)
        assert [m.content for m in history[1::2]] == [f"{chat_id} turn {n}" for n in range(3)]


def test_closed_instance_refuses_calls(settings_kwargs: dict[str, object]) -> None:
    with ChatSessions(**settings_kwargs) as chats:  # type: ignore[arg-type]
        chats.create_chat()
    with pytest.raises(RuntimeError, match="closed"):
        chats.create_chat()


def test_the_facade_runs_its_private_loop_on_uvloop_where_installed(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")
    with ChatSessions(database_url=f"sqlite:///{tmp_path / 'loop.db'}", auto_title=False) as chats:
        assert isinstance(chats._runner.loop, uvloop.Loop)
        assert chats.list_chats() == []
