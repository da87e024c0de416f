"""Coherent caches across replicas: whatever replica A changes in a chat's history other
than by appending (a message deleted, an answer regenerated, the chat deleted and
imported again under its id, a new system prompt, params, model or context policy),
replica B's next turn sends exactly the history as stored now, read from the fake
model's request log. B always caches the chat first (a turn of its own), so a stale cache
would show."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatsessions import AsyncChatSessions, ContextTooLong, InvalidInput, Role
from chatsessions.store import Store, open_store
from chatsessions.testing import FakeLLMServer
from chatsessions.types import Chat, utcnow
from tests.procs import Services, service_env

Change = Callable[[AsyncChatSessions, str, FakeLLMServer], Awaitable[Any]]


@pytest.fixture
async def replicas(
    settings_kwargs: dict[str, object],
) -> AsyncIterator[tuple[AsyncChatSessions, AsyncChatSessions]]:
    async with (
        AsyncChatSessions(**settings_kwargs, replica_id="a") as a,  # type: ignore[arg-type]
        AsyncChatSessions(**settings_kwargs, replica_id="b") as b,  # type: ignore[arg-type]
    ):
        yield a, b


async def expected_request(chats: AsyncChatSessions, chat_id: str,
                           text: str) -> list[dict[str, str]]:
    """What a turn sending ``text`` must show the model: the stored ok history, from its
    first user message (whole turns: an answer whose question is gone is left out)."""
    system, *rest = await chats.history(chat_id)
    first = next((i for i, m in enumerate(rest) if m.role is Role.USER), len(rest))
    return [system.as_openai(), *(m.as_openai() for m in rest[first:]),
            {"role": "user", "content": text}]


async def cached_by_b(a: AsyncChatSessions, b: AsyncChatSessions) -> str:
    """A chat of three turns, the last by B (B holds it cached and presumes it)."""
    chat_id = await a.create_chat("Be brief.")
    await a.send_message(chat_id, "first question")
    await b.send_message(chat_id, "second question")
    await b.send_message(chat_id, "third question")
    assert b._runtime.presumed_chat(chat_id) is not None
    return chat_id


async def delete_first_question(a: AsyncChatSessions, chat_id: str, _: FakeLLMServer) -> None:
    assert await a.delete_message(chat_id, 1)


async def delete_last_answer(a: AsyncChatSessions, chat_id: str, _: FakeLLMServer) -> None:
    assert await a.delete_message(chat_id, (await a.get_chat(chat_id)).message_count)


async def regenerate(a: AsyncChatSessions, chat_id: str, fake_llm: FakeLLMServer) -> None:
    fake_llm.script("A second opinion.")  # the fake's own answer would be the same text
    await a.regenerate(chat_id)


async def import_over_its_id(a: AsyncChatSessions, chat_id: str, _: FakeLLMServer) -> None:
    """Deleted, then its export from an earlier moment imported under the same id: fewer
    messages than B cached, and not the same ones."""
    earlier = await a.export_chat(chat_id)
    earlier["messages"] = earlier["messages"][:2]
    earlier["chat"]["message_count"] = 2
    earlier["messages"][0]["content"] = "a question only the import has"
    await a.delete_chat(chat_id)
    assert await a.import_chat(earlier, keep_id=True) == chat_id


async def new_system_prompt(a: AsyncChatSessions, chat_id: str, _: FakeLLMServer) -> None:
    await a.update_chat(chat_id, system_prompt="Answer in French.")


CHANGES: dict[str, Change] = {
    "delete_first_question": delete_first_question,
    "delete_last_answer": delete_last_answer,
    "regenerate": regenerate,
    "import_over_its_id": import_over_its_id,
    "system_prompt": new_system_prompt,
}


@pytest.mark.parametrize("change", CHANGES)
async def test_b_sends_what_a_changed(
    replicas: tuple[AsyncChatSessions, AsyncChatSessions], fake_llm: FakeLLMServer,
    change: str,
) -> None:
    a, b = replicas
    chat_id = await cached_by_b(a, b)
    before = await expected_request(a, chat_id, "fourth question")
    await CHANGES[change](a, chat_id, fake_llm)
    expected = await expected_request(a, chat_id, "fourth question")
    assert expected != before  # the change changed what a turn sends
    await b.send_message(chat_id, "fourth question")
    assert fake_llm.requests[-1].messages == expected
    # and B's cache, now read afresh, serves the next turn as stored too
    expected = await expected_request(a, chat_id, "fifth question")
    await b.send_message(chat_id, "fifth question")
    assert fake_llm.requests[-1].messages == expected


async def test_b_uses_the_params_and_model_a_set(
    replicas: tuple[AsyncChatSessions, AsyncChatSessions], fake_llm: FakeLLMServer,
) -> None:
    a, b = replicas
    chat_id = await cached_by_b(a, b)
    await a.update_chat(chat_id, params={"temperature": 0.25, "max_tokens": 77},
                        model="fake-model-2")
    expected = await expected_request(a, chat_id, "fourth question")
    await b.send_message(chat_id, "fourth question")
    sent = fake_llm.requests[-1]
    assert (sent.model, sent.params.get("temperature"), sent.params.get("max_tokens")) == (
        "fake-model-2", 0.25, 77)
    assert sent.messages == expected


async def test_b_follows_the_context_policy_a_set(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer,
) -> None:
    """In a chat longer than the window, B trims; once A sets the policy to ``none``, B
    refuses to send it rather than trim by the policy it cached."""
    small = {**settings_kwargs, "context_window": 400, "max_output_tokens": 50}
    async with (
        AsyncChatSessions(**small, replica_id="a") as a,  # type: ignore[arg-type]
        AsyncChatSessions(**small, replica_id="b") as b,  # type: ignore[arg-type]
    ):
        chat_id = await a.create_chat("Be brief.")
        for n in range(6):
            await (a if n < 3 else b).send_message(chat_id, f"question {n} " + "word " * 40)
        sent = fake_llm.requests[-1].messages
        assert [m["role"] for m in sent].count("user") < 6  # B trimmed
        await a.update_chat(chat_id, context_policy="none")
        asked = len(fake_llm.requests)
        with pytest.raises(ContextTooLong):
            await b.send_message(chat_id, "one more " + "word " * 40)
        assert len(fake_llm.requests) == asked


async def test_b_sends_an_edits_fork_as_stored(
    replicas: tuple[AsyncChatSessions, AsyncChatSessions], fake_llm: FakeLLMServer,
) -> None:
    a, b = replicas
    chat_id = await cached_by_b(a, b)
    fork_id, _ = await a.edit_message(chat_id, 3, "the second question, edited")
    for chat in (fork_id, chat_id):  # the source is as B cached it
        expected = await expected_request(a, chat, "fourth question")
        await b.send_message(chat, "fourth question")
        assert fake_llm.requests[-1].messages == expected


# the store: which writes bump the version, and the turn's first write checks it ---------


@pytest.fixture(params=["memory", "sql"])
async def store(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Store]:
    opened = open_store("memory://" if request.param == "memory" else database_url)
    await opened.open()
    yield opened
    await opened.close()


async def test_non_append_writes_bump_the_history_version(store: Store) -> None:
    chat = Chat(id=f"v-{utcnow().timestamp()}", system_prompt="Be kind.", tenant_id="t")
    await store.create_chat(chat)
    await store.add_user_message(chat.id, "hello")

    async def version() -> int:
        found = await store.get_chat(chat.id, "t")
        assert found is not None
        return found.history_version

    start = await version()
    assert start == chat.history_version
    await store.update_chat(chat.id, "t", {"title": "t", "metadata": {"k": 1}})
    assert await version() == start  # what a turn sends did not change
    for field, value in (("system_prompt", "Be brief."), ("params", {"temperature": 0.5}),
                         ("model", "m2"), ("context_policy", "none")):
        before = await version()
        await store.update_chat(chat.id, "t", {field: value})
        assert await version() == before + 1, field
    before = await version()
    assert await store.delete_message(chat.id, 1)
    assert await version() == before + 1
    assert not await store.delete_message(chat.id, 1)  # nothing deleted, nothing bumped
    assert await version() == before + 1


async def test_the_turns_first_write_refuses_a_stale_history_version(store: Store) -> None:
    chat = Chat(id=f"w-{utcnow().timestamp()}", system_prompt="Be kind.", tenant_id="t")
    await store.create_chat(chat)
    seen = await store.get_chat(chat.id, "t")
    assert seen is not None
    until = utcnow() + timedelta(seconds=30)
    stale = replace(seen, history_version=seen.history_version - 1)
    assert await store.begin_turn(stale, "me", until, "hello") is None  # count and time match
    assert (await store.messages(chat.id)) == []
    assert await store.begin_turn(seen, "me", until, "hello") is not None


# two live services -----------------------------------------------------------------------


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    yield running
    running.stop_all()


async def test_an_item_deleted_through_one_service_is_not_sent_by_the_other(
    database_url: str, fake_llm: FakeLLMServer, services: Services
) -> None:
    """The issue's case: ``DELETE /v1/conversations/{id}/items/{item}`` on replica A, then
    a turn on replica B, which had the conversation cached."""
    a, b = await services.start(
        (service_env(database_url, fake_llm.base_url, "replica-a"), "a"),
        (service_env(database_url, fake_llm.base_url, "replica-b"), "b"),
    )
    async with httpx.AsyncClient(timeout=60) as http:
        conversation = (await http.post(f"{a.url}/v1/conversations", json={"items": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "my card number is 1234"},
            {"role": "assistant", "content": "Noted."},
        ]})).json()
        chat_url = f"/chats/{conversation['id']}/messages"
        for text in ("what is the weather?", "and tomorrow?"):
            assert (await http.post(b.url + chat_url, json={"content": text})).status_code == 200
        assert "my card number is 1234" in str(fake_llm.requests[-1].messages)

        items = (await http.get(f"{a.url}/v1/conversations/{conversation['id']}/items",
                                params={"order": "asc"})).json()["data"]
        secret = next(i for i in items if i["content"][0]["text"] == "my card number is 1234")
        deleted = await http.delete(
            f"{a.url}/v1/conversations/{conversation['id']}/items/{secret['id']}")
        assert deleted.status_code == 200

        answered = await http.post(b.url + chat_url, json={"content": "anything else?"})
        assert answered.status_code == 200
        stored = (await http.get(a.url + chat_url, params={"limit": 1000})).json()["data"]
    sent = fake_llm.requests[-1].messages
    assert "my card number is 1234" not in str(sent)
    ok = [{"role": m["role"], "content": m["content"]} for m in stored
          if m["status"] == "ok" and m["seq"] < answered.json()["seq"]]
    assert ok[0] == {"role": "assistant", "content": "Noted."}  # its question is gone
    assert sent == [{"role": "system", "content": "Be brief."}, *ok[1:]]  # whole turns
    assert [m["role"] for m in sent[1:]].count(Role.USER.value) == 3


ORDER = {"name": "order_status", "description": "Where an order is.",
         "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                        "required": ["order_id"]}}


async def test_a_tool_round_on_a_chat_another_replica_moved_is_judged_as_stored(
    replicas: tuple[AsyncChatSessions, AsyncChatSessions],
) -> None:
    """B's turn called a tool, so B presumes the chat for the round; A answered the call
    meanwhile. B's submission of the same output is refused (the chat waits for nothing)
    and stores nothing twice; B's next turn sends the history as stored."""
    a, b = replicas
    chat_id = await a.create_chat("Be brief.", tools=[ORDER])
    calls = (await b.send(chat_id, "where is order 7?")).tool_calls or ()
    assert calls
    assert b._runtime.presumed_chat(chat_id) is not None
    await a.send_tool_results(chat_id, {calls[0].id: "order 7: in Leeds"})
    with pytest.raises(InvalidInput, match="not waiting"):
        await b.send_tool_results(chat_id, {calls[0].id: "order 7: in Leeds"})
    stored = await a.history(chat_id)
    assert [m.role for m in stored] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL,
                                        Role.ASSISTANT]
    answer = await b.send(chat_id, "thanks", tool_choice="none")
    assert [m.seq for m in await b.history(chat_id)][-1] == answer.seq == 6


async def test_the_turn_after_a_round_presumes_the_chat_the_round_left(
    replicas: tuple[AsyncChatSessions, AsyncChatSessions],
) -> None:
    """A round leaves the chat presumable (no read before the next turn's first write)
    and exactly as stored: the next turn takes the shortcut and its write succeeds."""
    a, _b = replicas
    chat_id = await a.create_chat("Be brief.", tools=[ORDER])
    calls = (await a.send(chat_id, "where is order 7?")).tool_calls or ()
    await a.send_tool_results(chat_id, {calls[0].id: "order 7: in Leeds"})
    presumed = a._runtime.presumed_chat(chat_id)
    assert presumed is not None
    stored = await a.get_chat(chat_id)
    assert (presumed.message_count, presumed.updated_at, presumed.history_version) == (
        stored.message_count, stored.updated_at, stored.history_version)
