"""The turn algorithm end to end: real databases, a real HTTP fake model."""

from __future__ import annotations

import asyncio
import time

import pytest

from chatsessions import (
    DEFAULT_SYSTEM_PROMPT,
    AsyncChatSessions,
    BackendError,
    ChatMoved,
    ChatNotFound,
    ContextTooLong,
    InvalidInput,
    Role,
    TurnStatus,
)
from chatsessions.prompts import DEMO_CHATS
from chatsessions.testing import FakeLLMServer, Fault

SYSTEM = {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


async def test_tutorial_scenario_sends_whole_history_per_chat(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    (first1, follow1), (first2, follow2) = DEMO_CHATS
    chat1 = await sessions.create_chat()
    chat2 = await sessions.create_chat()
    a1 = await sessions.send_message(chat1, first1)
    b1 = await sessions.send_message(chat2, first2)
    a2 = await sessions.send_message(chat1, follow1)
    b2 = await sessions.send_message(chat2, follow2)

    seen = fake_llm.chat_histories()
    assert seen == [
        [SYSTEM, user(first1)],
        [SYSTEM, user(first2)],
        [SYSTEM, user(first1), assistant(a1), user(follow1)],
        [SYSTEM, user(first2), assistant(b1), user(follow2)],
    ]
    # Each answer is derived from exactly the history its own chat had.
    assert a2 == FakeLLMServer.answer_for(seen[2])
    assert b2 == FakeLLMServer.answer_for(seen[3])
    history = await sessions.history(chat1)
    assert [m.as_openai() for m in history] == [*seen[2], assistant(a2)]
    assert all(first2 not in m.content for m in history)


async def test_create_chat_returns_uuid_and_starts_with_system_prompt(
    sessions: AsyncChatSessions,
) -> None:
    import uuid

    chat_id = await sessions.create_chat()
    assert str(uuid.UUID(chat_id)) == chat_id
    history = await sessions.history(chat_id)
    assert [m.as_openai() for m in history] == [SYSTEM]
    custom = await sessions.create_chat("You are a pirate.", title="arr", metadata={"k": 1})
    chat = await sessions.get_chat(custom)
    assert (chat.system_prompt, chat.title, chat.metadata) == ("You are a pirate.", "arr", {"k": 1})


async def test_history_survives_restart(settings_kwargs: dict[str, object]) -> None:
    async with AsyncChatSessions(**settings_kwargs) as first:  # type: ignore[arg-type]
        chat_id = await first.create_chat(title="kept")
        answer = await first.send_message(chat_id, "remember me")
    async with AsyncChatSessions(**settings_kwargs) as second:  # type: ignore[arg-type]
        chats = await second.list_chats()
        assert [c.id for c in chats] == [chat_id]
        assert chats[0].message_count == 2
        history = await second.history(chat_id)
        assert [m.content for m in history[1:]] == ["remember me", answer]
        # and the restarted instance continues the same conversation
        await second.send_message(chat_id, "again")
        assert len(await second.history(chat_id)) == 5


async def test_unknown_chat_raises_before_anything_is_sent(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    with pytest.raises(ChatNotFound) as info:
        await sessions.send_message("no-such-chat", "hello")
    assert isinstance(info.value, ValueError)
    assert "Chat session not found!" in str(info.value)
    assert fake_llm.requests == []
    for call in (sessions.get_chat, sessions.history, sessions.delete_chat):
        with pytest.raises(ChatNotFound):
            await call("no-such-chat")


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "empty"), ("   \n", "empty"), ("x" * 40_000, "limit"), ("a\x00b", "NUL"),
     ("a\ud800b", "surrogate")],
)
async def test_bad_messages_are_refused_and_nothing_is_stored(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer, text: str, problem: str
) -> None:
    chat_id = await sessions.create_chat()
    with pytest.raises(InvalidInput, match=problem):
        await sessions.send_message(chat_id, text)
    assert fake_llm.requests == []
    assert (await sessions.get_chat(chat_id)).message_count == 0


async def test_bad_params_are_refused(sessions: AsyncChatSessions) -> None:
    with pytest.raises(InvalidInput, match="temperature"):
        await sessions.create_chat(params={"temperature": 9})
    with pytest.raises(InvalidInput, match="nonsense"):
        await sessions.create_chat(params={"nonsense": 1})


@pytest.mark.parametrize("fault", [Fault.status(500), Fault.status(429), Fault.cut_stream(1),
                                   Fault.malformed()])
async def test_backend_fault_keeps_user_message_and_chat_stays_usable(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer, fault: Fault
) -> None:
    chat_id = await sessions.create_chat()
    await sessions.send_message(chat_id, "first")
    fake_llm.inject(fault)
    with pytest.raises(BackendError) as info:
        await sessions.send_message(chat_id, "this one fails")
    assert str(info.value)
    stored = await sessions.history(chat_id, include_failed=True)
    failed = stored[3]
    assert (failed.role, failed.content, failed.status) == (
        Role.USER, "this one fails", TurnStatus.FAILED)
    assert failed.error
    # The failed turn is not shown to the model; the next turn goes on normally.
    answer = await sessions.send_message(chat_id, "next")
    last_seen = fake_llm.chat_histories()[-1]
    assert [m["content"] for m in last_seen[1:]] == ["first", stored[2].content, "next"]
    assert answer == FakeLLMServer.answer_for(last_seen)
    assert [m.role for m in await sessions.history(chat_id)] == [
        Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]


async def test_cut_stream_keeps_partial_text_in_a_failed_record(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    fake_llm.inject(Fault.cut_stream(2))
    received: list[str] = []
    with pytest.raises(BackendError) as info:  # noqa: PT012
        async for delta in sessions.stream_message(chat_id, "tell me a story"):
            received.append(delta)
    assert received
    assert info.value.partial == "".join(received)
    assert "broke off" in str(info.value)
    rows = await sessions.history(chat_id, include_failed=True)
    assert [(m.role, m.status) for m in rows[1:]] == [
        (Role.USER, TurnStatus.FAILED), (Role.ASSISTANT, TurnStatus.FAILED)]
    assert rows[2].content == "".join(received)
    # both records say why the turn failed
    assert rows[1].error == rows[2].error == str(info.value)
    assert await sessions.history(chat_id) == rows[:1]


async def test_retry_asks_the_failed_message_again(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    with pytest.raises(InvalidInput, match="nothing to retry"):
        await sessions.retry(chat_id)
    fake_llm.inject(Fault.status(503))
    with pytest.raises(BackendError):
        await sessions.send_message(chat_id, "please work")
    answer = await sessions.retry(chat_id)
    assert answer.content == FakeLLMServer.answer_for([SYSTEM, user("please work")])


async def test_streaming_yields_the_same_text_as_stored(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    items = [item async for item in sessions.stream(chat_id, "stream please")]
    *deltas, final = items
    assert len(deltas) > 1
    assert "".join(deltas) == final.content  # type: ignore[union-attr]
    assert fake_llm.requests[-1].stream is True
    history = await sessions.history(chat_id)
    assert history[-1].content == final.content  # type: ignore[union-attr]
    assert final.completion_tokens > 0  # type: ignore[union-attr]


async def test_abandoned_stream_does_not_leave_the_turn_pending(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    stream = sessions.stream_message(chat_id, "one two three four five six")
    await anext(stream)
    await stream.aclose()
    rows = await sessions.history(chat_id, include_failed=True)
    assert rows[1].status is TurnStatus.FAILED
    assert "cancelled" in (rows[1].error or "")
    await sessions.send_message(chat_id, "still usable")


async def test_usage_is_stored_and_summed_on_the_chat(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    first = await sessions.send(chat_id, "count my tokens")
    second = await sessions.send(chat_id, "and these")
    chat = await sessions.get_chat(chat_id)
    assert first.prompt_tokens > 0
    assert first.completion_tokens > 0
    assert chat.prompt_tokens == first.prompt_tokens + second.prompt_tokens
    assert chat.completion_tokens == first.completion_tokens + second.completion_tokens
    assert chat.message_count == 4


async def test_an_answer_records_the_model_that_answered_and_how_long_it_took(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    """The stored answer names the model the server says answered and the time its call
    took (at least the model's own delay here), as read back from storage."""
    chat_id = await sessions.create_chat()
    fake_llm.delay = 0.25
    started = time.perf_counter()
    sent = await sessions.send(chat_id, "who answers, and how fast?")
    waited_ms = (time.perf_counter() - started) * 1000
    stored = (await sessions.history(chat_id))[-1]
    for answer in (sent, stored):
        assert answer.model == "fake-model"
        assert answer.latency_ms is not None
        assert 250 <= answer.latency_ms <= waited_ms  # the model's part of the send


async def test_the_chat_a_turn_leaves_is_presumable_and_exactly_as_stored(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    """After each turn this process knows the chat exactly as stored (count, last update,
    history version), so the next turn can take its lease with its question's write
    instead of reading the chat first."""
    chat_id = await sessions.create_chat()
    for text in ("one", "two", "three"):
        await sessions.send(chat_id, text)
        presumed = sessions._runtime.presumed_chat(chat_id)
        assert presumed is not None
        stored = await sessions.get_chat(chat_id)
        assert (presumed.message_count, presumed.updated_at, presumed.history_version) == (
            stored.message_count, stored.updated_at, stored.history_version)


async def test_a_send_on_a_message_count_runs_only_while_the_chat_holds_that_many(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    """``if_message_count``: a send meant for the chat as the caller last saw it is refused
    with ``ChatMoved`` naming the chat, storing and asking nothing, once it has moved on."""
    chat_id = await sessions.create_chat()
    await sessions.send(chat_id, "first")
    seen = (await sessions.get_chat(chat_id)).message_count
    await sessions.send(chat_id, "another turn came first")
    asked = len(fake_llm.requests)
    with pytest.raises(ChatMoved) as moved:
        await sessions.send(chat_id, "meant for what I saw", if_message_count=seen)
    assert moved.value.chat_id == chat_id
    assert len(fake_llm.requests) == asked
    now = await sessions.get_chat(chat_id)
    assert now.message_count == seen + 2
    assert await sessions.send(chat_id, "for what is there", if_message_count=now.message_count)


async def test_context_trimming_drops_oldest_turns_but_keeps_system_prompt(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    kwargs = {**settings_kwargs, "context_window": 400, "max_output_tokens": 100}
    async with AsyncChatSessions(**kwargs) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat("Be brief.")
        for turn in range(12):
            await chats.send_message(chat_id, f"turn {turn} " + "word " * 20)
        seen = fake_llm.chat_histories()
        last = seen[-1]
        assert last[0] == {"role": "system", "content": "Be brief."}
        assert last[-1]["content"].startswith("turn 11 ")
        assert len(last) < 2 * 12 + 1  # something was dropped...
        assert last[1]["role"] == "user"  # ...as whole turns
        roles = [m["role"] for m in last[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        # what was sent is the most recent, contiguous part of the history
        stored = [m.as_openai() for m in await chats.history(chat_id)]
        assert last[1:] == stored[len(stored) - len(last):-1]


async def test_a_message_larger_than_the_window_is_refused(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    kwargs = {**settings_kwargs, "context_window": 200, "max_output_tokens": 50}
    async with AsyncChatSessions(**kwargs) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        with pytest.raises(ContextTooLong):
            await chats.send_message(chat_id, "word " * 400)
        assert (await chats.get_chat(chat_id)).message_count == 0
        assert fake_llm.requests == []


async def test_concurrent_sends_to_one_chat_alternate(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    fake_llm.delay = 0.01
    chat_id = await sessions.create_chat()
    texts = [f"message {n}" for n in range(10)]
    await asyncio.gather(*(sessions.send_message(chat_id, t) for t in texts))
    history = await sessions.history(chat_id)
    assert [m.role for m in history[1:]] == [Role.USER, Role.ASSISTANT] * 10
    assert [m.content for m in history[1::2]] == texts  # arrival order, each exactly once
    # each answer is derived from exactly the history before it
    for index in range(2, len(history), 2):
        visible = [m.as_openai() for m in history[:index]]
        assert history[index].content == FakeLLMServer.answer_for(visible)


async def test_list_update_delete(sessions: AsyncChatSessions) -> None:
    ids = [await sessions.create_chat(title=f"chat {n}", metadata={"n": n}) for n in range(5)]
    listed = await sessions.list_chats()
    assert [c.id for c in listed] == ids[::-1]
    page1 = await sessions.list_chats(limit=2)
    page2 = await sessions.list_chats(limit=2, before=(page1[-1].created_at, page1[-1].id))
    assert [c.id for c in page1 + page2] == ids[::-1][:4]
    assert [c.id for c in await sessions.list_chats(metadata={"n": 3})] == [ids[3]]
    assert [c.id for c in await sessions.list_chats(title_contains="CHAT 1")] == [ids[1]]

    updated = await sessions.update_chat(ids[0], title="renamed", system_prompt="Be terse.",
                                         params={"temperature": 0.5})
    assert (updated.title, updated.system_prompt, updated.params) == (
        "renamed", "Be terse.", {"temperature": 0.5})
    await sessions.delete_chat(ids[0])
    with pytest.raises(ChatNotFound):
        await sessions.get_chat(ids[0])
    assert len(await sessions.list_chats()) == 4


async def test_per_chat_params_reach_the_model(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat(params={"temperature": 0.3, "max_tokens": 3})
    answer = await sessions.send_message(chat_id, "short please", params={"temperature": 0.9})
    params = fake_llm.requests[-1].params
    assert (params["temperature"], params["max_tokens"]) == (0.9, 3)
    assert len(answer.split()) == 3


async def test_tenants_do_not_see_each_other(sessions: AsyncChatSessions) -> None:
    other = sessions.for_tenant("other")
    mine = await sessions.create_chat()
    theirs = await other.create_chat()
    assert [c.id for c in await sessions.list_chats()] == [mine]
    with pytest.raises(ChatNotFound):
        await sessions.send_message(theirs, "peek")
    with pytest.raises(ChatNotFound):
        await other.delete_chat(mine)
    assert (await sessions.get_chat(mine)).id == mine


async def test_interrupted_turns_are_failed_on_start(settings_kwargs: dict[str, object]) -> None:
    async with AsyncChatSessions(**settings_kwargs) as first:  # type: ignore[arg-type]
        chat_id = await first.create_chat()
        await first._runtime.store.add_user_message(chat_id, "the process died here")
    async with AsyncChatSessions(**settings_kwargs) as second:  # type: ignore[arg-type]
        rows = await second.history(chat_id, include_failed=True)
        assert rows[1].status is TurnStatus.FAILED
        assert "interrupted" in (rows[1].error or "")
        await second.send_message(chat_id, "carry on")


async def test_backend_retries_honour_retry_after(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    async with AsyncChatSessions(**{**settings_kwargs, "max_retries": 2}) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        fake_llm.inject(Fault.status(429, retry_after=0), times=2)
        answer = await chats.send_message(chat_id, "third time lucky")
        assert [r.fault for r in fake_llm.requests] == ["status_429", "status_429", None]
        assert answer == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
        fake_llm.inject(Fault.status(503), times=1)
        streamed = [d async for d in chats.stream_message(chat_id, "and streamed")]
        assert "".join(streamed) == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])


async def test_an_answer_not_stored_sees_what_a_turn_would_and_keeps_nothing(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("Be brief.")
    first = await sessions.send_message(chat_id, "one")
    second = await sessions.send_message(chat_id, "two")
    before = await sessions.history(chat_id, include_failed=True)
    system = {"role": "system", "content": "Be brief."}

    loose = await sessions.answer(chat_id, "three?")
    assert fake_llm.chat_histories()[-1] == [
        system, user("one"), assistant(first), user("two"), assistant(second), user("three?")]
    assert (loose.seq, loose.role, loose.chat_id) == (0, Role.ASSISTANT, chat_id)
    assert loose.content == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert loose.usage.total_tokens > 0
    assert loose.context_messages == 6

    streamed = [item async for item in sessions.stream_answer(
        chat_id, "again?", up_to_seq=2, prior=[(Role.USER, "x"), (Role.ASSISTANT, "y")],
        system_prompt="Be long.")]
    assert fake_llm.chat_histories()[-1] == [
        {"role": "system", "content": "Be long."}, user("one"), assistant(first),
        user("x"), assistant("y"), user("again?")]
    assert not isinstance(streamed[-1], str)
    assert "".join(i for i in streamed if isinstance(i, str)) == streamed[-1].content

    alone = await sessions.answer(None, "nobody", model="another-model")
    assert fake_llm.requests[-1].model == "another-model"
    assert fake_llm.chat_histories()[-1] == [
        {"role": "system", "content": sessions.settings.system_prompt}, user("nobody")]
    assert alone.chat_id == ""
    assert await sessions.history(chat_id, include_failed=True) == before  # nothing stored

    with pytest.raises(ChatNotFound):
        await sessions.answer("no-such-chat", "hello")
    with pytest.raises(InvalidInput):
        await sessions.answer(chat_id, "hello", prior=[(Role.SYSTEM, "no")])
    with pytest.raises(InvalidInput):
        await sessions.answer(chat_id, " ")


async def test_a_stateless_completion_goes_through_the_model_call_path(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    messages = [{"role": "system", "content": "S"}, user("hi")]
    completion = await sessions.complete(messages, params={"max_tokens": 50})
    assert fake_llm.chat_histories()[-1] == messages
    assert fake_llm.requests[-1].params.get("max_tokens") == 50
    assert completion.text == FakeLLMServer.answer_for(messages)
    assert completion.usage.completion_tokens > 0
    items = [item async for item in sessions.stream_complete(messages)]
    assert "".join(i for i in items if isinstance(i, str)) == completion.text
    assert not isinstance(items[-1], str)
    assert items[-1].text == completion.text
    assert await sessions.list_chats() == []  # nothing stored
    with pytest.raises(InvalidInput):
        await sessions.complete([{"role": "tool", "content": "x"}])
    fake_llm.inject(Fault.status(400))
    with pytest.raises(BackendError):
        await sessions.complete(messages)


async def test_a_keyed_request_whose_first_attempt_died_is_failed_not_left_pending(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    """The question of the first attempt is stored, pending, and its process died (no
    lease left): the repeat says the request failed, marks that question failed, and
    asks the model nothing."""
    chat_id = await sessions.create_chat()
    store = sessions._runtime.store
    asked = await store.add_user_message(chat_id, "where is order 5?", idempotency_key="k1")
    with pytest.raises(BackendError, match=r"already failed: .*interrupted"):
        await sessions.send(chat_id, "where is order 5?", idempotency_key="k1")
    (stored,) = await sessions.messages(chat_id)
    assert (stored.seq, stored.status) == (asked.seq, TurnStatus.FAILED)
    assert stored.error is not None
    assert fake_llm.requests == []
    # the chat goes on
    assert (await sessions.send(chat_id, "and order 6?")).content


async def test_a_keyed_request_whose_answer_was_deleted_gets_no_other_message(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    first = await sessions.send(chat_id, "where is order 5?", idempotency_key="k2")
    assert await sessions.delete_message(chat_id, first.seq)
    await sessions.send(chat_id, "hello?")
    with pytest.raises(BackendError, match="already failed"):
        await sessions.send(chat_id, "where is order 5?", idempotency_key="k2")
    assert [m.content for m in await sessions.messages(chat_id)][-2:] == [
        "hello?", FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])]
    # the same when nothing follows the question any more
    last = await sessions.send(chat_id, "and order 6?", idempotency_key="k3")
    assert await sessions.delete_message(chat_id, last.seq)
    with pytest.raises(BackendError, match="already failed"):
        await sessions.send(chat_id, "and order 6?", idempotency_key="k3")
