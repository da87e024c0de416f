"""Tool calls in a chat's history, through the library: Python functions run by the loop
(the tutorial's order-tracking chat, sync and async functions, a tool that raises), plain
definitions that leave the chat waiting for ``send_tool_results``, the refusal of a new
message while it waits, cancelling, retrying a failed round, regenerate, fork and usage.
Every test runs on SQLite and on PostgreSQL (the ``sessions`` fixture)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from chatsessions import (
    AsyncChatSessions,
    BackendError,
    InvalidInput,
    Message,
    Role,
    ToolCallDelta,
    ToolCallsPending,
)
from chatsessions.testing import FakeLLMServer, Fault

TUTORIAL = "Can you help me track order 1234?"
ORDER_SCHEMA = {"name": "order_status", "description": "Where an order is.",
                "parameters": {"type": "object",
                               "properties": {"order_id": {"type": "string"}},
                               "required": ["order_id"]}}
ran: list[str] = []


def order_status(order_id: str) -> str:
    """Where an order is.

    Args:
        order_id: the order's number
    """
    ran.append(order_id)
    return f"order {order_id}: shipped, arriving Tuesday"


async def refund(order_id: int) -> dict[str, object]:
    """Refund an order."""
    return {"order_id": order_id, "refunded": True}


def broken(order_id: str) -> str:
    """Always fails."""
    raise RuntimeError(f"the order system is down for {order_id}")


async def test_the_tutorial_chat_runs_a_python_function(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    ran.clear()
    chat_id = await sessions.create_chat("You are a support bot.")
    text = await sessions.send_message(chat_id, TUTORIAL, tools=[order_status])
    assert ran == ["1234"]
    assert "order 1234: shipped, arriving Tuesday" in text
    history = await sessions.history(chat_id)
    assert [m.role for m in history] == [Role.SYSTEM, Role.USER, Role.ASSISTANT,
                                         Role.TOOL, Role.ASSISTANT]
    (call,) = history[2].tool_calls or ()
    assert call.name == "order_status"
    assert json.loads(call.arguments) == {"order_id": "1234"}
    assert history[3].tool_call_id == call.id
    assert history[4].content == text
    assert await sessions.pending_tool_calls(chat_id) == []
    # the model was shown the call and its output together
    shown = fake_llm.chat_histories()[-1]
    assert shown[-2]["tool_calls"][0]["id"] == call.id
    assert shown[-1] == {"role": "tool", "content": history[3].content,
                         "tool_call_id": call.id}
    # and the chat goes on
    assert await sessions.send_message(chat_id, "thanks!")
    chat = await sessions.get_chat(chat_id)
    assert chat.message_count == 6


async def test_chat_tools_async_functions_and_a_tool_that_raises(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S", tools=[refund])
    assert [t.name for t in (await sessions.get_chat(chat_id)).tools] == ["refund"]
    answer = await sessions.send(chat_id, "refund order 77 please")
    assert "refunded" in answer.content
    history = await sessions.history(chat_id)
    assert json.loads(history[3].content) == {"order_id": 77, "refunded": True}
    text = await sessions.send_message(chat_id, "where is order 9?", tools=[broken])
    output = (await sessions.history(chat_id))[-2]
    assert output.role is Role.TOOL
    assert output.content == "error: RuntimeError: the order system is down for 9"
    assert output.content in text


async def test_a_definition_leaves_the_chat_waiting_for_outputs(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S", tools=[ORDER_SCHEMA])
    asked = await sessions.send(chat_id, "where are orders 12 and 34?")
    calls = asked.tool_calls or ()
    assert [json.loads(c.arguments)["order_id"] for c in calls] == ["12", "34"]
    assert await sessions.pending_tool_calls(chat_id) == list(calls)
    with pytest.raises(ToolCallsPending) as refused:
        await sessions.send(chat_id, "hello?")
    assert calls[0].id in str(refused.value)
    assert calls[1].id in str(refused.value)
    assert refused.value.chat_id == chat_id
    # a keyed send looks at the chat under its lease first: refused the same way
    with pytest.raises(ToolCallsPending):
        await sessions.send(chat_id, "hello?", idempotency_key="while-waiting")
    with pytest.raises(InvalidInput, match="missing.*" + calls[1].id):
        await sessions.send_tool_results(chat_id, {calls[0].id: "shipped"})
    with pytest.raises(InvalidInput, match="no pending tool call has the id nope"):
        await sessions.send_tool_results(chat_id, {"nope": "x", calls[0].id: "y"})
    answer = await sessions.send_tool_results(
        chat_id, {calls[0].id: "12: shipped", calls[1].id: "34: lost"})
    assert "12: shipped" in answer.content
    assert "34: lost" in answer.content
    assert not answer.tool_calls
    with pytest.raises(InvalidInput, match="not waiting"):
        await sessions.send_tool_results(chat_id, {calls[0].id: "again"})
    assert (await sessions.send(chat_id, "thanks", tool_choice="none")).content


async def test_cancelled_calls_let_the_chat_go_on(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S", tools=[ORDER_SCHEMA])
    calls = (await sessions.send(chat_id, "order 5?")).tool_calls or ()
    with pytest.raises(InvalidInput, match="zzz"):
        await sessions.cancel_tool_calls(chat_id, ["zzz"])
    assert await sessions.cancel_tool_calls(chat_id) == list(calls)
    assert await sessions.cancel_tool_calls(chat_id) == []
    answer = await sessions.send(chat_id, "never mind, hello", tool_choice="none")
    assert answer.content
    shown = fake_llm.chat_histories()[-1]
    assert shown[-2] == {"role": "tool", "content": "error: cancelled by the caller",
                         "tool_call_id": calls[0].id}


async def test_a_failed_round_keeps_the_outputs_and_retry_asks_again(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S", tools=[ORDER_SCHEMA])
    (call,) = (await sessions.send(chat_id, "order 8?")).tool_calls or ()
    fake_llm.inject(Fault.status(500))
    with pytest.raises(BackendError):
        await sessions.send_tool_results(chat_id, {call.id: "8: shipped"})
    assert await sessions.pending_tool_calls(chat_id) == []
    assert (await sessions.history(chat_id))[-1].role is Role.TOOL
    answer = await sessions.retry(chat_id)
    assert "8: shipped" in answer.content
    with pytest.raises(InvalidInput):
        await sessions.retry(chat_id)


async def test_a_failed_round_with_several_outputs_leaves_no_call_waiting(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    """Every output a failed round kept answers its call: none is taken for waiting (the
    look back past the outputs reaches the answer that made the calls), so the chat
    takes a new message."""
    chat_id = await sessions.create_chat("S", tools=[ORDER_SCHEMA])
    calls = (await sessions.send(chat_id, "where are orders 12 and 34?")).tool_calls or ()
    assert len(calls) == 2
    fake_llm.inject(Fault.status(500))
    with pytest.raises(BackendError):
        await sessions.send_tool_results(
            chat_id, {calls[0].id: "12: shipped", calls[1].id: "34: lost"})
    assert [m.role for m in (await sessions.history(chat_id))[-3:]] == [
        Role.ASSISTANT, Role.TOOL, Role.TOOL]
    assert await sessions.pending_tool_calls(chat_id) == []
    assert (await sessions.send(chat_id, "so where are they?", tool_choice="none")).content


async def test_max_tool_rounds_ends_in_text(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S")
    waiting = await sessions.send(chat_id, "order 3?", tools=[order_status],
                                  max_tool_rounds=0)
    assert waiting.tool_calls
    await sessions.cancel_tool_calls(chat_id)
    fake_llm.reset()
    answer = await sessions.send(chat_id, "order 4?", tools=[order_status],
                                 max_tool_rounds=1)
    assert not answer.tool_calls
    assert fake_llm.requests[-1].params["tool_choice"] == "none"


async def test_streaming_yields_pieces_calls_outputs_and_the_answer(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S")
    items = [item async for item in sessions.stream(chat_id, TUTORIAL,
                                                    tools=[order_status])]
    pieces = [i for i in items if isinstance(i, ToolCallDelta)]
    stored = [i for i in items if isinstance(i, Message)]
    assert [m.role for m in stored] == [Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]
    assert stored[0].tool_calls
    assert pieces[0].id == stored[0].tool_calls[0].id
    assert items[-1] == stored[-1]
    assert "".join(i for i in items if isinstance(i, str)) == stored[-1].content


async def test_usage_counts_every_model_call_and_fork_copies_the_calls(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S")
    await sessions.send(chat_id, TUTORIAL, tools=[order_status])
    history = await sessions.history(chat_id)
    answers = [m for m in history if m.role is Role.ASSISTANT]
    report = await sessions.usage()
    assert report.turns == 2
    assert report.completion_tokens == sum(m.completion_tokens for m in answers)
    fork = await sessions.fork_chat(chat_id)
    copied = await sessions.history(fork)
    assert [(m.role, m.tool_calls, m.tool_call_id) for m in copied[1:]] == [
        (m.role, m.tool_calls, m.tool_call_id) for m in history[1:]]
    assert (await sessions.usage()).turns == 2  # copies are counted once
    again = await sessions.regenerate(chat_id)
    assert again.replaces_seq == answers[-1].seq
    assert "shipped" in again.content


class Where(BaseModel):
    city: str
    days: int


async def test_a_loops_rounds_answer_under_the_calls_format_prompt_and_params(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    """A round of the loop answers as the call asked: in its format (parsed at the end),
    under its system prompt, with its params; not under the chat's own."""
    chat_id = await sessions.create_chat("You are a support bot.")
    answer = await sessions.send(chat_id, "where is order 1234 in 2 days?",
                                 tools=[order_status], response_format=Where,
                                 system_prompt="Answer in JSON.",
                                 params={"temperature": 0.25})
    assert isinstance(answer.parsed, Where)
    call, round_ = fake_llm.requests[-2:]
    assert call.messages[-1]["role"] == "user"
    assert round_.messages[-1]["role"] == "tool"
    for request in (call, round_):
        assert request.messages[0] == {"role": "system", "content": "Answer in JSON."}
        assert request.params["temperature"] == 0.25
        assert request.params["response_format"]["type"] == "json_schema"
    assert (await sessions.get_chat(chat_id)).system_prompt == "You are a support bot."


async def test_tool_results_answer_in_the_format_asked(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S", tools=[ORDER_SCHEMA])
    calls = (await sessions.send(chat_id, "where is order 12?")).tool_calls or ()
    answer = await sessions.send_tool_results(
        chat_id, {c.id: "in Leeds" for c in calls}, response_format=Where,
        context_policy="none")
    assert isinstance(answer.parsed, Where)
    assert fake_llm.requests[-1].params["response_format"]["json_schema"]["name"] == "Where"
    streamed = [item async for item in sessions.stream_tool_results(
        chat_id, {c.id: "in York" for c in (await sessions.send(
            chat_id, "and order 13?")).tool_calls or ()},
        response_format={"type": "json_object"})]
    final = streamed[-1]
    assert isinstance(final, Message)
    assert final.parsed == json.loads(final.content)
