"""Export and import: the JSON export is lossless (export → import → export is equal but
for the id) on SQLite and PostgreSQL; OpenAI-style messages lists import too; malformed
documents are precise refusals that store nothing."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatsessions import AsyncChatSessions, BackendError, ChatExists, InvalidInput
from chatsessions.engine.export import CHAT_FIELDS_LEFT_OUT, FORMAT, MESSAGE_FIELDS_LEFT_OUT
from chatsessions.testing import FakeLLMServer, Fault
from chatsessions.types import Chat, Message, TurnStatus
from tests.conftest import LiveServer
from tests.test_cli import cli_env, run


def without_id(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "chat": {k: v for k, v in doc["chat"].items() if k != "id"}}


async def busy_chat(sessions: AsyncChatSessions, fake: FakeLLMServer) -> str:
    """A chat with a bit of everything: metadata, params, expiry, archive, an ok turn, a
    failed one, a kept partial answer and a deleted message (a gap in the seqs)."""
    chat_id = await sessions.create_chat(
        "Be brief.", title="Order 42", metadata={"shop": "eu", "vip": True},
        params={"temperature": 0.3, "max_tokens": 200},
        expires_at=datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    await sessions.send(chat_id, "Where is my parcel?")
    fake.inject(Fault.status(500))
    with pytest.raises(BackendError):
        await sessions.send(chat_id, "Hello?")
    fake.inject(Fault.cut_stream(2))
    with pytest.raises(BackendError):
        async for _ in sessions.stream(chat_id, "One more thing"):
            pass
    await sessions.send(chat_id, "Thanks")
    await sessions.delete_message(chat_id, 3)
    await sessions.archive_chat(chat_id)
    return chat_id


async def test_export_import_export_is_lossless(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await busy_chat(sessions, fake_llm)
    exported = await sessions.export_chat(chat_id)
    assert exported["format"] == FORMAT
    statuses = {m["status"] for m in exported["messages"]}
    assert {"ok", "failed"} <= statuses
    assert 3 not in [m["seq"] for m in exported["messages"]]

    copy_id = await sessions.import_chat(json.loads(json.dumps(exported)))
    assert copy_id != chat_id
    again = await sessions.export_chat(copy_id)
    assert again["chat"]["id"] == copy_id
    assert without_id(again) == without_id(exported)

    # The copy is a working chat: its next turn continues the seqs, counters add up.
    before = await sessions.get_chat(copy_id)
    answer = await sessions.send(copy_id, "And the invoice?")
    assert answer.seq == before.message_count + 2
    after = await sessions.get_chat(copy_id)
    assert after.completion_tokens == before.completion_tokens + answer.completion_tokens
    sent = fake_llm.requests[-1].messages
    original = await sessions.history(chat_id)
    assert sent[:-1] == [m.as_openai() for m in original]  # same visible history


async def test_export_covers_every_field(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    """A field added to Chat or Message must reach the export (or be left out on purpose)."""
    chat_id = await sessions.create_chat()
    await sessions.send(chat_id, "Hello")
    exported = await sessions.export_chat(chat_id)
    chat_fields = {f.name for f in fields(Chat)} - set(CHAT_FIELDS_LEFT_OUT)
    message_fields = {f.name for f in fields(Message)} - set(MESSAGE_FIELDS_LEFT_OUT)
    assert set(exported["chat"]) == chat_fields
    assert all(set(m) == message_fields for m in exported["messages"])


async def test_keep_id_only_when_free(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat(title="original")
    await sessions.send(chat_id, "Hello")
    exported = await sessions.export_chat(chat_id)
    with pytest.raises(ChatExists):
        await sessions.import_chat(exported, keep_id=True)
    await sessions.delete_chat(chat_id)
    assert await sessions.import_chat(exported, keep_id=True) == chat_id
    assert await sessions.export_chat(chat_id) == exported
    # Another tenant cannot take an id that exists anywhere, nor see the chat.
    other = sessions.for_tenant("globex")
    with pytest.raises(ChatExists):
        await other.import_chat(exported, keep_id=True)
    copy = await other.import_chat(exported)
    assert (await other.get_chat(copy)).tenant_id == "globex"


async def test_openai_messages_list(sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await sessions.import_chat([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": [{"type": "text", "text": "In transit."}]},
    ])
    chat = await sessions.get_chat(chat_id)
    assert chat.system_prompt == "You are terse."
    assert chat.model == "fake-model"
    assert chat.message_count == 2
    rows = await sessions.history(chat_id)
    assert [(m.seq, m.role.value, m.content, m.status) for m in rows] == [
        (0, "system", "You are terse.", TurnStatus.OK),
        (1, "user", "Where is my parcel?", TurnStatus.OK),
        (2, "assistant", "In transit.", TurnStatus.OK)]
    answer = await sessions.send(chat_id, "When?")
    assert answer.seq == 4
    assert fake_llm.requests[-1].messages[:3] == [m.as_openai() for m in rows]

    # Without a system message the default prompt is used; a wrapper may carry a title.
    wrapped = await sessions.import_chat(
        {"messages": [{"role": "user", "content": "Hi"}], "title": "Greeting"})
    chat = await sessions.get_chat(wrapped)
    assert (chat.title, chat.system_prompt) == ("Greeting", sessions.settings.system_prompt)


MALFORMED: list[tuple[Any, str]] = [
    (42, "expected a chatsessions export"),
    ({"hello": 1}, "expected a chatsessions export"),
    ({"format": "something.else", "chat": {}}, "unsupported format"),
    ({"format": FORMAT, "messages": []}, "chat: Field required"),
    ({"format": FORMAT, "chat": {"system_prompt": "x"},
      "messages": [{"seq": 1, "role": "user", "content": "a", "status": "lost"}]},
     "messages.0.status"),
    ({"format": FORMAT, "chat": {"system_prompt": "x", "message_count": 1},
      "messages": [{"seq": 1, "role": "user", "content": "a"},
                   {"seq": 2, "role": "assistant", "content": "b"}]},
     "message_count (1) is below the highest message seq (2)"),
    ({"format": FORMAT, "chat": {"system_prompt": "x"},
      "messages": [{"seq": 1, "role": "user", "content": "a"},
                   {"seq": 1, "role": "assistant", "content": "b"}]},
     "two messages have the same seq"),
    ({"format": FORMAT, "chat": {"system_prompt": "x", "backend": "mystery"}},
     "chat.backend"),
    ({"format": FORMAT, "chat": {"system_prompt": "x", "params": {"temperature": 9}}},
     "chat.params"),
    ({"format": FORMAT, "chat": {"system_prompt": "x", "colour": "red"}}, "chat.colour"),
    ({"format": FORMAT, "chat": {"system_prompt": "x"},
      "messages": [{"seq": 1, "role": "user", "content": "a\x00b"}]},
     "messages.0.content contains a NUL"),
    ({"format": FORMAT, "chat": {"system_prompt": "x"},
      "messages": [{"seq": 2**40, "role": "user", "content": "a"}]}, "messages.0.seq"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "late"}],
     "messages.1.role: only the first message may be the system prompt"),
    ([{"role": "tool", "content": "a"}], "messages.0.tool_call_id: a tool message needs one"),
    ([{"role": "developer", "content": "a"}], "messages.0.role"),
    ([{"role": "user", "content": "   "}], "messages.0.content is empty"),
    ([{"role": "user", "content": "a", "name": "bob"}], "messages.0.name"),
]


@pytest.mark.parametrize(("document", "problem"), MALFORMED)
async def test_malformed_documents_are_refused_and_store_nothing(
    sessions: AsyncChatSessions, document: Any, problem: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await sessions.import_chat(document)
    assert problem in str(refused.value)
    assert await sessions.list_chats(include_archived=True) == []


async def test_version_1_exports_still_import(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    """The first format: chat with tenant_id, messages with chat_id, idempotency_key and
    the system prompt as message 0."""
    chat_id = await sessions.create_chat("Be kind.")
    await sessions.send(chat_id, "Hello")
    chat = await sessions.get_chat(chat_id)
    v1 = {"format": "chatsessions.chat.v1", "chat": chat.to_dict(),
          "messages": [m.to_dict() for m in await sessions.history(chat_id)]}
    copy = await sessions.import_chat(v1)
    assert without_id(await sessions.export_chat(copy)) == without_id(
        await sessions.export_chat(chat_id))


def test_http_import_both_shapes_and_errors(
    live_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        chat = http.post("/chats", json={"title": "t", "metadata": {"k": 1}}).json()
        http.post(f"/chats/{chat['id']}/messages", json={"content": "Where is my parcel?"})
        exported = http.get(f"/chats/{chat['id']}/export").json()

        imported = http.post("/chats/import", json=exported)
        assert imported.status_code == 201, imported.text
        copy = imported.json()
        assert copy["id"] != chat["id"]
        assert (copy["title"], copy["metadata"], copy["message_count"]) == ("t", {"k": 1}, 2)
        again = http.get(f"/chats/{copy['id']}/export").json()
        assert without_id(again) == without_id(exported)

        listed = http.post("/chats/import", json=[{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello"}])
        assert listed.status_code == 201
        messages = http.get(f"/chats/{listed.json()['id']}/messages").json()["data"]
        assert [(m["seq"], m["role"], m["content"]) for m in messages] == [
            (1, "user", "Hi"), (2, "assistant", "Hello")]

        taken = http.post("/chats/import", params={"keep_id": "true"}, json=exported)
        assert (taken.status_code, taken.json()["error"]["type"]) == (409, "chat_exists")
        count = len(http.get("/chats", params={"archived": "all"}).json()["data"])
        for body, status, kind in [
            (b"{not json", 400, "invalid_json"),
            (b'"just a string"', 422, "invalid_request"),
            (json.dumps({"format": FORMAT, "chat": {}}).encode(), 422, "invalid_request"),
            (json.dumps([{"role": "user"}]).encode(), 422, "invalid_request"),
        ]:
            refused = http.post("/chats/import", content=body,
                                headers={"Content-Type": "application/json"})
            assert (refused.status_code, refused.json()["error"]["type"]) == (status, kind)
        assert len(http.get("/chats", params={"archived": "all"}).json()["data"]) == count


def test_cli_import_and_export_all(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    env = cli_env(tmp_path, fake_llm)
    first = run(env, "new", "--title", "one").stdout.strip()
    assert run(env, "send", first, "Where is my parcel?").returncode == 0
    second = run(env, "new").stdout.strip()
    out = tmp_path / "out"
    written = run(env, "export", "--all", str(out))
    assert written.returncode == 0, written.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{first}.json", f"{second}.json"])
    markdown = run(env, "export", "--all", str(tmp_path / "md"), "-f", "markdown")
    assert markdown.returncode == 0, markdown.stderr
    assert "# one" in (tmp_path / "md" / f"{first}.md").read_text()

    other_env = cli_env(tmp_path / "elsewhere", fake_llm)
    (tmp_path / "elsewhere").mkdir()
    imported = run(other_env, "import", str(out / f"{first}.json"), "--keep-id")
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == first
    original = json.loads((out / f"{first}.json").read_text())
    assert json.loads(run(other_env, "export", first).stdout) == original

    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Hi"}]))
    listed = run(other_env, "import", str(messages))
    assert listed.returncode == 0, listed.stderr
    assert "Be brief." not in run(other_env, "show", listed.stdout.strip()).stdout.split(
        "user:")[1]

    (tmp_path / "bad.json").write_text("{nope")
    bad = run(other_env, "import", str(tmp_path / "bad.json"))
    assert (bad.returncode, bad.stderr.startswith("error:")) == (4, True)
    taken = run(other_env, "import", str(out / f"{first}.json"), "--keep-id")
    assert taken.returncode == 4
    assert "already exists" in taken.stderr
    both = run(env, "export", first, "--all", str(out))
    assert both.returncode == 2


async def test_imported_times_are_kept_exactly(
    sessions: AsyncChatSessions,
) -> None:
    when = datetime(2020, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)
    doc = {"format": FORMAT, "chat": {
        "system_prompt": "x", "created_at": when.isoformat(),
        "updated_at": (when + timedelta(hours=1)).isoformat()},
        "messages": [{"seq": 1, "role": "user", "content": "a", "status": "failed",
                      "error": "boom", "created_at": "2020-03-01T01:00:00.5+02:00"}]}
    chat_id = await sessions.import_chat(doc)
    chat = await sessions.get_chat(chat_id)
    assert (chat.created_at, chat.updated_at) == (when, when + timedelta(hours=1))
    (message,) = (await sessions.history(chat_id, include_failed=True))[1:]
    assert message.created_at == datetime(2020, 2, 29, 23, 0, 0, 500000, tzinfo=UTC)
    assert (message.status, message.error) == (TurnStatus.FAILED, "boom")
