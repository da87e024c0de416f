"""Branches of a chat: regenerate (the earlier answer kept), edit (in a fork), fork, retry;
in the library on SQLite, PostgreSQL and memory, over HTTP, and on the command line."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from chatsessions import AsyncChatSessions, ChatNotFound, InvalidInput
from chatsessions.errors import BackendError
from chatsessions.testing import FakeLLMServer, Fault
from chatsessions.types import Message, Role, TurnStatus
from tests.conftest import LiveServer, sse_events
from tests.test_cli import cli_env, run


def seen(fake_llm: FakeLLMServer) -> list[str]:
    """What the model was shown by the last call, system prompt left out."""
    return [m["content"] for m in fake_llm.chat_histories()[-1][1:]]


def rows(messages: list[Message]) -> list[tuple[int, Role, TurnStatus, str, int | None]]:
    return [(m.seq, m.role, m.status, m.content, m.replaces_seq) for m in messages]


async def check_regenerate(chats: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await chats.create_chat("Be brief.")
    first = await chats.send(chat_id, "one")
    old = await chats.send(chat_id, "two")
    before = await chats.get_chat(chat_id)

    new = await chats.regenerate(chat_id, params={"temperature": 0.5})
    assert seen(fake_llm) == ["one", first.content, "two"]  # without the old answer
    assert fake_llm.requests[-1].params["temperature"] == 0.5
    assert (new.seq, new.replaces_seq, new.status) == (5, old.seq, TurnStatus.OK)
    assert new.content == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])

    everything = await chats.history(chat_id, include_failed=True)
    assert rows(everything[1:]) == [
        (1, Role.USER, TurnStatus.OK, "one", None),
        (2, Role.ASSISTANT, TurnStatus.OK, first.content, None),
        (3, Role.USER, TurnStatus.OK, "two", None),
        (4, Role.ASSISTANT, TurnStatus.REPLACED, old.content, None),
        (5, Role.ASSISTANT, TurnStatus.OK, new.content, 4),
    ]
    assert [m.seq for m in await chats.history(chat_id)] == [0, 1, 2, 3, 5]
    assert [m.seq for m in await chats.history(chat_id, include_replaced=True)] == [
        0, 1, 2, 3, 4, 5]
    after = await chats.get_chat(chat_id)
    assert after.message_count == 5
    assert after.completion_tokens == before.completion_tokens + new.completion_tokens

    # The cached history follows: the next turn sees the new answer, not the old one.
    await chats.send(chat_id, "three")
    assert seen(fake_llm) == ["one", first.content, "two", new.content, "three"]
    # Twice in a row: the second regenerate replaces the answer to "three" only.
    again = await chats.regenerate(chat_id)
    assert again.replaces_seq == 7
    assert seen(fake_llm) == ["one", first.content, "two", new.content, "three"]
    report = await chats.usage()
    assert report.turns == 5  # every answer the model gave was paid for, replaced or not


async def test_regenerate_keeps_the_old_answer_as_replaced(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    await check_regenerate(sessions, fake_llm)


async def test_regenerate_in_memory(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    kwargs = {**settings_kwargs, "database_url": "memory://"}
    async with AsyncChatSessions(**kwargs) as chats:  # type: ignore[arg-type]
        await check_regenerate(chats, fake_llm)


async def test_another_process_sees_the_regenerated_answer(
    sessions: AsyncChatSessions, settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    """Each instance has its own history cache; a regenerate elsewhere must reach it."""
    chat_id = await sessions.create_chat()
    first = await sessions.send(chat_id, "one")
    async with AsyncChatSessions(**settings_kwargs) as other:  # type: ignore[arg-type]
        await other.send(chat_id, "two")
        new = await other.regenerate(chat_id)
    await sessions.send(chat_id, "three")
    assert seen(fake_llm) == ["one", first.content, "two", new.content, "three"]


async def test_regenerate_failure_changes_nothing(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    first = await sessions.send(chat_id, "one")
    before = (await sessions.get_chat(chat_id), await sessions.history(chat_id,
                                                                        include_failed=True))
    fake_llm.inject(Fault.status(500))
    with pytest.raises(BackendError, match="500"):
        await sessions.regenerate(chat_id)
    fake_llm.inject(Fault.cut_stream(2))
    received = []
    with pytest.raises(BackendError, match="broke off"):  # noqa: PT012
        async for item in sessions.stream_regenerate(chat_id):
            received.append(item)
    assert received  # some text arrived, and was not kept
    chat, history = await sessions.get_chat(chat_id), await sessions.history(
        chat_id, include_failed=True)
    assert (chat.message_count, chat.completion_tokens) == (
        before[0].message_count, before[0].completion_tokens)
    assert history == before[1]
    await sessions.send(chat_id, "two")
    assert seen(fake_llm) == ["one", first.content, "two"]


async def test_stream_regenerate_yields_what_is_stored(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    old = await sessions.send(chat_id, "tell me")
    *deltas, final = [item async for item in sessions.stream_regenerate(chat_id)]
    assert isinstance(final, Message)
    assert len(deltas) > 1
    assert "".join(str(d) for d in deltas) == final.content
    assert fake_llm.requests[-1].stream is True
    assert final.replaces_seq == old.seq


async def test_nothing_to_regenerate(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    with pytest.raises(InvalidInput, match="nothing to regenerate: the chat has no answer"):
        await sessions.regenerate(chat_id)
    fake_llm.inject(Fault.status(500))
    with pytest.raises(BackendError):
        await sessions.send(chat_id, "lost")
    with pytest.raises(InvalidInput, match="no answer yet"):
        await sessions.regenerate(chat_id)  # a failed turn has no answer to regenerate
    await sessions.append_messages(chat_id, [(Role.USER, "q")])
    with pytest.raises(InvalidInput, match="last message is not an answer"):
        await sessions.regenerate(chat_id)
    await sessions.append_messages(chat_id, [(Role.ASSISTANT, "a1"), (Role.ASSISTANT, "a2")])
    with pytest.raises(InvalidInput, match="does not follow a user message"):
        await sessions.regenerate(chat_id)
    with pytest.raises(ChatNotFound):
        await sessions.regenerate("no-such-chat")
    await sessions.send(chat_id, "q2")
    with pytest.raises(ChatNotFound):
        await sessions.for_tenant("other").regenerate(chat_id)
    assert len(fake_llm.requests) == 2  # refusals never reach the model


async def test_edit_forks_and_leaves_the_chat_alone(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("Be kind.")
    first = await sessions.send(chat_id, "one")
    await sessions.send(chat_id, "two")
    source = await sessions.history(chat_id, include_failed=True)

    fork_id, answer = await sessions.edit_message(chat_id, 3, "two, better")
    assert seen(fake_llm) == ["one", first.content, "two, better"]
    fork = await sessions.get_chat(fork_id)
    assert (fork.parent_id, fork.forked_at_seq, fork.system_prompt) == (chat_id, 2, "Be kind.")
    assert [m.content for m in await sessions.history(fork_id)] == [
        "Be kind.", "one", first.content, "two, better", answer.content]
    assert answer.seq == 4
    assert await sessions.history(chat_id, include_failed=True) == source

    # Editing the first message forks an empty chat.
    empty_id, _ = await sessions.edit_message(chat_id, 1, "one, again")
    assert seen(fake_llm) == ["one, again"]
    assert (await sessions.get_chat(empty_id)).forked_at_seq == 0

    chats_before = len(await sessions.list_chats())
    for seq in (2, 0, 99):
        with pytest.raises(InvalidInput, match=f"message {seq} is not a user message"):
            await sessions.edit_message(chat_id, seq, "x")
    with pytest.raises(InvalidInput, match="empty"):
        await sessions.edit_message(chat_id, 1, "  ")
    with pytest.raises(ChatNotFound):
        await sessions.for_tenant("other").edit_message(chat_id, 1, "x")
    assert len(await sessions.list_chats()) == chats_before  # refusals leave no fork


async def test_failed_edit_keeps_its_fork_for_a_retry(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    await sessions.send(chat_id, "one")
    fake_llm.inject(Fault.status(503))
    with pytest.raises(BackendError) as info:
        await sessions.edit_message(chat_id, 1, "uno")
    fork_id = info.value.chat_id
    assert fork_id is not None
    kept = await sessions.history(fork_id, include_failed=True)
    assert [(m.content, m.status) for m in kept[1:]] == [("uno", TurnStatus.FAILED)]
    answer = await sessions.retry(fork_id)
    assert seen(fake_llm) == ["uno"]
    assert answer.chat_id == fork_id
    assert len(await sessions.history(chat_id)) == 3  # the source is untouched


async def test_stream_retry_answers_then_there_is_nothing_to_retry(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    fake_llm.inject(Fault.status(500))
    with pytest.raises(BackendError):
        await sessions.send(chat_id, "lost")
    *deltas, answer = [item async for item in sessions.stream_retry(chat_id)]
    assert isinstance(answer, Message)
    assert "".join(str(d) for d in deltas) == answer.content
    assert seen(fake_llm) == ["lost"]
    with pytest.raises(InvalidInput, match="nothing to retry"):
        await sessions.retry(chat_id)


# HTTP ------------------------------------------------------------------------------------

def messages_of(http: httpx.Client, chat_id: str) -> list[tuple[int, str, str, int | None]]:
    data = http.get(f"/chats/{chat_id}/messages").json()["data"]
    return [(m["seq"], m["role"], m["status"], m["replaces_seq"]) for m in data]


def new_chat(http: httpx.Client, *turns: str) -> str:
    chat_id: str = http.post("/chats", json={"title": "branches"}).json()["id"]
    for text in turns:
        assert http.post(f"/chats/{chat_id}/messages", json={"content": text}).is_success
    return chat_id


def test_fork_over_http(http: httpx.Client) -> None:
    chat_id = new_chat(http, "one", "two")
    forked = http.post(f"/chats/{chat_id}/fork", json={"up_to_seq": 2})
    assert forked.status_code == 201
    fork = forked.json()
    assert (fork["parent_id"], fork["forked_at_seq"], fork["message_count"], fork["title"]) == (
        chat_id, 2, 2, "branches")
    assert [m[0] for m in messages_of(http, fork["id"])] == [1, 2]
    whole = http.post(f"/chats/{chat_id}/fork")  # no body: the whole chat
    assert (whole.status_code, whole.json()["message_count"]) == (201, 4)

    beyond = http.post(f"/chats/{chat_id}/fork", json={"up_to_seq": 5})
    assert beyond.status_code == 422
    assert beyond.json()["error"]["message"] == "up_to_seq must be within 0..4"
    assert http.post(f"/chats/{chat_id}/fork", json={"up_to_seq": -1}).status_code == 422
    assert http.post("/chats/nope/fork", json={}).status_code == 404


def test_regenerate_over_http(http: httpx.Client, fake_llm: FakeLLMServer) -> None:
    chat_id = new_chat(http)
    nothing = http.post(f"/chats/{chat_id}/regenerate")
    assert nothing.status_code == 422
    assert nothing.json()["error"]["message"] == (
        "nothing to regenerate: the chat has no answer yet")
    http.post(f"/chats/{chat_id}/messages", json={"content": "one"})

    answer = http.post(f"/chats/{chat_id}/regenerate",
                         json={"params": {"temperature": 0.2}})
    assert answer.status_code == 200
    assert (answer.json()["seq"], answer.json()["replaces_seq"]) == (3, 2)
    assert fake_llm.requests[-1].params["temperature"] == 0.2
    assert seen(fake_llm) == ["one"]
    assert messages_of(http, chat_id) == [
        (1, "user", "ok", None), (2, "assistant", "replaced", None),
        (3, "assistant", "ok", 2)]

    streamed = http.post(f"/chats/{chat_id}/regenerate", json={"stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed)
    assert {name for name, _ in events[:-1]} == {"delta"}
    name, done = events[-1]
    assert (name, done["seq"], done["replaces_seq"]) == ("done", 4, 3)
    assert "".join(str(data["content"]) for _, data in events[:-1]) == done["content"]

    before = messages_of(http, chat_id)
    fake_llm.inject(Fault.status(500))
    failed = http.post(f"/chats/{chat_id}/regenerate")
    assert failed.status_code == 502
    assert failed.json()["error"]["type"] == "backend_error"
    fake_llm.inject(Fault.status(500))
    failed_stream = http.post(f"/chats/{chat_id}/regenerate", json={"stream": True})
    assert failed_stream.status_code == 502  # failed before any output: a plain error
    assert messages_of(http, chat_id) == before
    assert http.post("/chats/nope/regenerate").status_code == 404


def test_retry_over_http(http: httpx.Client, fake_llm: FakeLLMServer) -> None:
    chat_id = new_chat(http)
    assert http.post(f"/chats/{chat_id}/retry").status_code == 422
    fake_llm.inject(Fault.status(500))
    assert http.post(f"/chats/{chat_id}/messages", json={"content": "hi"}).status_code == 502
    retried = http.post(f"/chats/{chat_id}/retry", json={})
    assert retried.status_code == 200
    assert retried.json()["content"] == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert seen(fake_llm) == ["hi"]
    assert [m[:3] for m in messages_of(http, chat_id)] == [
        (1, "user", "failed"), (2, "user", "ok"), (3, "assistant", "ok")]
    again = http.post(f"/chats/{chat_id}/retry")
    assert again.status_code == 422
    assert again.json()["error"]["message"] == (
        "nothing to retry: the chat's last turn did not fail")

    fake_llm.inject(Fault.status(500))
    http.post(f"/chats/{chat_id}/messages", json={"content": "more"})
    streamed = http.post(f"/chats/{chat_id}/retry", headers={"Accept": "text/event-stream"})
    assert sse_events(streamed)[-1][0] == "done"
    assert seen(fake_llm)[-1] == "more"


def test_edit_over_http(http: httpx.Client, fake_llm: FakeLLMServer) -> None:
    chat_id = new_chat(http, "one", "two")
    source = http.get(f"/chats/{chat_id}/messages").json()
    edited = http.post(f"/chats/{chat_id}/messages/3/edit", json={"content": "two, v2"})
    assert edited.status_code == 201
    body = edited.json()
    assert (body["chat"]["parent_id"], body["chat"]["message_count"]) == (chat_id, 4)
    assert (body["answer"]["chat_id"], body["answer"]["seq"]) == (body["chat"]["id"], 4)
    assert seen(fake_llm)[-1] == "two, v2"
    assert http.get(f"/chats/{chat_id}/messages").json() == source

    not_user = http.post(f"/chats/{chat_id}/messages/2/edit", json={"content": "x"})
    assert not_user.status_code == 422
    assert not_user.json()["error"]["message"] == "message 2 is not a user message of this chat"
    assert http.post(f"/chats/{chat_id}/messages/0/edit",
                       json={"content": "x"}).status_code == 422
    assert http.post(f"/chats/{chat_id}/messages/1/edit",
                       json={"content": " "}).status_code == 422
    assert http.post("/chats/nope/messages/1/edit", json={"content": "x"}).status_code == 404

    fake_llm.inject(Fault.status(500))
    failed = http.post(f"/chats/{chat_id}/messages/1/edit", json={"content": "uno"})
    assert failed.status_code == 502
    fork_id = failed.json()["error"]["chat_id"]
    assert [m[:3] for m in messages_of(http, fork_id)] == [(1, "user", "failed")]
    assert http.post(f"/chats/{fork_id}/retry").status_code == 200


def test_branch_routes_are_documented(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    for path, status in [("/chats/{chat_id}/fork", "201"),
                         ("/chats/{chat_id}/regenerate", "200"),
                         ("/chats/{chat_id}/retry", "200"),
                         ("/chats/{chat_id}/messages/{seq}/edit", "201")]:
        responses = paths[path]["post"]["responses"]
        assert {status, "404", "422"} <= set(responses), path


def test_other_tenants_get_not_found(keyed: tuple[LiveServer, str, str]) -> None:
    server, key_a, key_b = keyed
    a, b = {"Authorization": f"Bearer {key_a}"}, {"Authorization": f"Bearer {key_b}"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        chat_id = http.post("/chats", json={}, headers=a).json()["id"]
        http.post(f"/chats/{chat_id}/messages", json={"content": "private"}, headers=a)
        before = http.get(f"/chats/{chat_id}/messages", headers=a).json()
        attempts = [
            http.post(f"/chats/{chat_id}/fork", json={}, headers=b),
            http.post(f"/chats/{chat_id}/regenerate", headers=b),
            http.post(f"/chats/{chat_id}/regenerate", json={"stream": True}, headers=b),
            http.post(f"/chats/{chat_id}/retry", headers=b),
            http.post(f"/chats/{chat_id}/messages/1/edit", json={"content": "x"}, headers=b),
        ]
        for response in attempts:
            assert response.status_code == 404, response.request.url
            assert response.json()["error"]["type"] == "not_found"
        assert http.get("/chats", headers=b).json()["data"] == []
        assert http.get(f"/chats/{chat_id}/messages", headers=a).json() == before
        assert len(http.get("/chats", headers=a).json()["data"]) == 1


# command line ----------------------------------------------------------------------------

def test_cli_fork_edit_regenerate_retry(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    env = {**cli_env(tmp_path, fake_llm), "CHATSESSIONS_MAX_RETRIES": "0"}
    chat_id = run(env, "new").stdout.strip()
    first = run(env, "send", chat_id, "one").stdout.strip()

    regenerated = run(env, "regenerate", chat_id)
    assert regenerated.returncode == 0, regenerated.stderr
    assert regenerated.stdout.strip() == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert seen(fake_llm) == ["one"]
    streamed = run(env, "regenerate", "--stream", chat_id)
    assert streamed.stdout.strip() == regenerated.stdout.strip()
    shown = run(env, "show", chat_id).stdout
    assert shown.count("(earlier answer)") == 2
    assert f"assistant (earlier answer): {first}" in shown

    forked = run(env, "fork", chat_id, "--at", "1")
    assert forked.returncode == 0, forked.stderr
    fork_id = forked.stdout.strip()
    assert "user: one" in run(env, "show", fork_id).stdout

    edited = run(env, "edit", chat_id, "1", "uno")
    assert edited.returncode == 0, edited.stderr
    edit_id, answer = edited.stdout.strip().split("\n")
    assert seen(fake_llm) == ["uno"]
    assert answer == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert f"user: uno\nassistant: {answer}" in run(env, "show", edit_id).stdout

    fake_llm.inject(Fault.status(500))
    failed = run(env, "edit", chat_id, "1", "eins")
    assert failed.returncode == 5
    kept_in = failed.stderr.split("kept in chat ")[1].split(":")[0]
    retried = run(env, "retry", "--stream", kept_in)
    assert retried.returncode == 0, retried.stderr
    assert seen(fake_llm) == ["eins"]

    assert run(env, "retry", chat_id).returncode == 4  # nothing failed
    assert run(env, "regenerate", "nope").returncode == 3
    fake_llm.inject(Fault.status(500))
    assert run(env, "regenerate", chat_id).returncode == 5
    assert run(env, "edit", chat_id, "2", "x").returncode == 4
