"""Detached and background turns (``sessions.runs``) on SQLite and PostgreSQL: a reader
that leaves does not stop its turn, steps are read again from any point, from memory or
rebuilt from storage by another instance; background runs end completed, failed or
cancelled, whoever asks, and one whose process is gone ends failed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from chatsessions import (
    AsyncChatSessions,
    InvalidInput,
    Message,
    Run,
    RunNotFound,
    RunStatus,
    Step,
    ToolCallsPending,
    TurnStatus,
)
from chatsessions.testing import FakeLLMServer, Fault

DEADLINE = 30.0


async def finished(sessions: AsyncChatSessions, run_id: str) -> Run:
    """Poll the run until it ends (a generous deadline, not a fixed sleep)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + DEADLINE
    while True:
        run = await sessions.runs.get(run_id)
        if run.status.finished:
            return run
        assert loop.time() < until, f"run stuck {run.status}"
        await asyncio.sleep(0.05)


async def steps(sessions: AsyncChatSessions, chat_id: str, seq: int,
                after: int = -1) -> list[Step]:
    return [step async for step in sessions.runs.follow(chat_id, seq, after=after)]


def text_of(read: list[Step]) -> str:
    return "".join(s.item for s in read if isinstance(s.item, str))


async def test_a_reader_that_leaves_does_not_stop_the_turn(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    fake_llm.inject(Fault.stall(after_chunks=1, seconds=0.5))
    chat_id = await sessions.create_chat()
    stream = sessions.runs.stream(chat_id, "tell me a story in many words")
    first = await anext(stream)
    await stream.aclose()  # the reader goes; the model is still mid-answer
    assert first.index == 0
    assert isinstance(first.item, str)
    rest = await steps(sessions, chat_id, first.seq, after=0)
    answer = rest[-1].item
    assert isinstance(answer, Message)
    assert answer.seq == first.seq
    assert [s.index for s in rest] == list(range(1, len(rest) + 1))
    assert (first.item + text_of(rest)).strip() == answer.content
    stored = await sessions.messages(chat_id)
    assert [(m.role.value, m.status) for m in stored] == [
        ("user", TurnStatus.OK), ("assistant", TurnStatus.OK)]
    assert sum(1 for r in fake_llm.requests if "tell me a story" in str(r.messages)) == 1


async def test_another_instance_rebuilds_a_finished_turn_from_storage(
    sessions: AsyncChatSessions, settings_kwargs: dict[str, object]
) -> None:
    chat_id = await sessions.create_chat()
    live = [step async for step in sessions.runs.stream(chat_id, "hello there")]
    answer = live[-1].item
    assert isinstance(answer, Message)
    assert not live[-1].rebuilt
    async with AsyncChatSessions(**settings_kwargs) as other:  # type: ignore[arg-type]
        whole = await steps(other, chat_id, answer.seq)
        assert [(s.index, s.rebuilt) for s in whole] == [(0, True), (1, True)]
        assert whole[0].item == answer.content
        assert isinstance(whole[1].item, Message)
        assert whole[1].item.seq == answer.seq
        tail = await steps(other, chat_id, answer.seq, after=3)
        assert [(s.index, isinstance(s.item, Message)) for s in tail] == [(4, True)]
        with pytest.raises(RunNotFound):
            await steps(other, chat_id, answer.seq + 2)
        with pytest.raises(RunNotFound):
            await other.for_tenant("someone-else").runs.get("nope")


async def test_a_background_run_completes_and_is_stored(
    sessions: AsyncChatSessions, settings_kwargs: dict[str, object]
) -> None:
    chat_id = await sessions.create_chat()
    run = await sessions.runs.start(chat_id, "what is two and two", metadata={"k": "v"})
    assert run.status is RunStatus.QUEUED
    assert run.seq is None
    done = await finished(sessions, run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.error is None
    assert done.metadata == {"k": "v"}
    answer = await sessions.get_message(chat_id, done.seq or 0)
    assert answer is not None
    assert answer.status is TurnStatus.OK
    async with AsyncChatSessions(**settings_kwargs) as other:  # type: ignore[arg-type]
        assert (await other.runs.get(run.id)).status is RunStatus.COMPLETED
        read = [s async for s in other.runs.follow_run(run.id)]
        assert read[-1].item == answer
        with pytest.raises(RunNotFound):  # another tenant's run is not found
            await other.for_tenant("other").runs.get(run.id)


ORDER_TOOL = {"type": "function", "function": {
    "name": "order_status", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}}}}


async def test_a_background_run_calls_tools_and_a_background_round_answers_them(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    run = await sessions.runs.start(chat_id, "Where is order 4417?", tools=[ORDER_TOOL])
    done = await finished(sessions, run.id)
    asked = await sessions.get_message(chat_id, done.seq or 0)
    assert done.status is RunStatus.COMPLETED
    assert asked is not None
    [call] = asked.tool_calls or ()
    with pytest.raises(ToolCallsPending):  # refused before a run is stored
        await sessions.runs.start(chat_id, "Hello?")
    with pytest.raises(InvalidInput):
        await sessions.runs.start_tool_results(chat_id, {"call_nope": "?"})
    requests = len(fake_llm.requests)
    run = await sessions.runs.start_tool_results(chat_id, {call.id: "shipped"},
                                                 tools=[ORDER_TOOL])
    done = await finished(sessions, run.id)
    assert done.status is RunStatus.COMPLETED
    assert len(fake_llm.requests) == requests + 1
    roles = [m.role for m in await sessions.history(chat_id)]
    assert roles[-3:] == ["assistant", "tool", "assistant"]
    answer = await sessions.get_message(chat_id, done.seq or 0)
    assert answer is not None
    assert answer.role == "assistant"
    assert "shipped" in answer.content


async def test_a_failed_background_run_says_why(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    fake_llm.inject(Fault.status(500))
    run = await sessions.runs.start(chat_id, "fail please")
    done = await finished(sessions, run.id)
    assert done.status is RunStatus.FAILED
    assert done.error
    assert [m.status for m in await sessions.messages(chat_id)] == [TurnStatus.FAILED]


async def wait_in_progress(sessions: AsyncChatSessions, run_id: str) -> Run:
    loop = asyncio.get_running_loop()
    until = loop.time() + DEADLINE
    while (run := await sessions.runs.get(run_id)).seq is None:
        assert loop.time() < until
        assert not run.status.finished
        await asyncio.sleep(0.05)
    return run


@pytest.mark.parametrize("where", ["here", "another instance"])
async def test_cancel_stops_the_model_call_and_marks_the_turn(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer, where: str
) -> None:
    kwargs = {**settings_kwargs, "request_timeout": 60.0}
    async with AsyncChatSessions(**kwargs) as sessions:  # type: ignore[arg-type]
        chat_id = await sessions.create_chat()
        fake_llm.inject(Fault.stall(after_chunks=1, seconds=40))
        run = await sessions.runs.start(chat_id, "a very long answer please")
        await wait_in_progress(sessions, run.id)
        if where == "here":
            cancelled = await sessions.runs.cancel(run.id)
            assert cancelled.status is RunStatus.CANCELLED
        else:
            async with AsyncChatSessions(**kwargs) as other:  # type: ignore[arg-type]
                asked = await other.runs.cancel(run.id)
                assert asked.cancel_requested
                cancelled = await finished(other, run.id)
        assert cancelled.status is RunStatus.CANCELLED
        user = (await sessions.messages(chat_id))[0]
        assert user.status is TurnStatus.FAILED
        assert (await sessions.runs.cancel(run.id)).status is RunStatus.CANCELLED  # idem
        # the chat goes on
        assert (await sessions.send(chat_id, "and now?")).status is TurnStatus.OK


async def test_a_run_whose_process_died_ends_failed(
    sessions: AsyncChatSessions
) -> None:
    chat_id = await sessions.create_chat()
    store = sessions._runtime.store
    now = (await sessions.get_chat(chat_id)).created_at
    await store.create_run(Run(id="gone1", tenant_id="default", chat_id=chat_id,
                               status=RunStatus.IN_PROGRESS, owner="dead/1",
                               expires_at=now - timedelta(seconds=1)))
    run = await sessions.runs.get("gone1")
    assert run.status is RunStatus.FAILED
    assert run.error
    assert "interrupted" in run.error
    assert not await store.update_run("gone1", "dead/1", RunStatus.COMPLETED)  # not revived


def test_the_sync_facade_runs_in_the_background_too(
    settings_kwargs: dict[str, object],
) -> None:
    from chatsessions import ChatSessions

    with ChatSessions(**settings_kwargs) as chats:  # type: ignore[arg-type]
        chat_id = chats.create_chat()
        steps = chats.runs.stream(chat_id, "hello")
        first = next(iter(steps))
        rest = list(chats.runs.follow(chat_id, first.seq, after=first.index))
        assert isinstance(rest[-1].item, Message)
        run = chats.runs.start(chat_id, "again")
        read = list(chats.runs.follow_run(run.id))
        assert isinstance(read[-1].item, Message)
        assert chats.runs.get(run.id).status is RunStatus.COMPLETED
        assert chats.runs.cancel(run.id).status is RunStatus.COMPLETED
