"""Backends come from entry points: a plugin package installed next to chatsessions (here
put on ``sys.path`` with its ``*.dist-info``, which is all an install leaves behind that
``importlib.metadata`` reads) is used by name, by the library and by the service."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatsessions import AsyncChatSessions, InvalidInput
from chatsessions.backends import installed, make_backend
from chatsessions.config import Settings
from tests.conftest import LiveServer, sse_events

PLUGIN = Path(__file__).parent / "plugins" / "echo_backend"


@pytest.fixture(scope="module", autouse=True)
def echo_installed() -> Iterator[None]:
    sys.path.insert(0, str(PLUGIN))
    importlib.invalidate_caches()
    yield
    sys.path.remove(str(PLUGIN))
    sys.modules.pop("chatsessions_echo", None)


def _settings(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {"database_url": f"sqlite:///{tmp_path / 'c.db'}", "backend": "echo",
            "auto_title": False, **extra}


def test_first_party_and_plugin_backends_are_registered_the_same_way() -> None:
    points = installed()
    assert {"local", "openai", "echo"} <= set(points)
    assert points["local"].value == "chatsessions.backends.local:LocalBackend"
    assert points["openai"].value == "chatsessions.backends.openai:OpenAIBackend"
    assert points["echo"].dist is not None
    assert points["echo"].dist.name == "chatsessions-echo"


async def test_a_turn_runs_through_the_plugin(tmp_path: Path) -> None:
    options = {"echo": {"prefix": "heard: "}}
    async with AsyncChatSessions(**_settings(tmp_path, backend_options=options)) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        answer = await chats.send(chat_id, "where is my order?")
        assert answer.content == "heard: where is my order?"
        assert answer.model == "echo-1"
        deltas = [d async for d in chats.stream_message(chat_id, "and my refund?")]
        assert len(deltas) == 2
        assert "".join(deltas) == "heard: and my refund?"
        chat = await chats.get_chat(chat_id)
        assert (chat.backend, chat.model, chat.message_count) == ("echo", "echo-1", 4)
        assert [m.content for m in await chats.history(chat_id)][1:] == [
            "where is my order?", "heard: where is my order?",
            "and my refund?", "heard: and my refund?"]
        assert chats.get_backend().calls == 2  # type: ignore[attr-defined]
        # An export of the plugin's chat comes back as a chat of the same backend.
        copy = await chats.import_chat(await chats.export_chat(chat_id))
        assert (await chats.get_chat(copy)).backend == "echo"


async def test_one_chat_on_the_plugin_among_others(tmp_path: Path) -> None:
    """The default backend stays; a chat names the plugin's."""
    async with AsyncChatSessions(**_settings(tmp_path, backend="openai")) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat(backend="echo")
        assert (await chats.send(chat_id, "hi")).content == "echo: hi"


def test_the_plugin_checks_its_own_options() -> None:
    with pytest.raises(ValueError, match="colour"):
        make_backend("echo", Settings(backend_options={"echo": {"colour": "red"}}))


def test_backend_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSESSIONS_BACKEND", "echo")
    monkeypatch.setenv("CHATSESSIONS_BACKEND_OPTIONS", '{"echo": {"prefix": "> "}}')
    backend = make_backend("echo", Settings())
    assert backend.options.prefix == "> "  # type: ignore[attr-defined]


async def test_an_unknown_backend_names_the_installed_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'nope'.*echo, local, openai"):
        Settings(backend="nope")
    with pytest.raises(InvalidInput, match=r"unknown backend 'nope'.*echo, local, openai"):
        make_backend("nope", Settings())
    async with AsyncChatSessions(**_settings(tmp_path)) as chats:  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="echo, local, openai"):
            await chats.create_chat(backend="nope")


def test_the_service_answers_through_the_plugin(tmp_path: Path) -> None:
    from chatsessions.service import create_app

    app = create_app(Settings(**_settings(tmp_path)))  # type: ignore[arg-type]
    server = LiveServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            chat = http.post("/chats", json={}).json()
            assert (chat["backend"], chat["model"]) == ("echo", "echo-1")
            answer = http.post(f"/chats/{chat['id']}/messages", json={"content": "hello"})
            assert answer.status_code == 200
            assert answer.json()["content"] == "echo: hello"
            streamed = http.post(f"/chats/{chat['id']}/messages",
                                 json={"content": "again", "stream": True})
            assert sse_events(streamed)[-1][1]["content"] == "echo: again"
            models = http.get("/v1/models").json()
            assert [m["id"] for m in models["data"]] == ["echo-1"]
    finally:
        server.stop()
