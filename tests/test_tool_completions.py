"""Stateless completions with tools: definitions go to the model, its calls come back as
the Completion's ``tool_calls`` (plain) or as ``ToolCallDelta`` pieces (streamed), and a
history of calls and outputs is passed on in OpenAI's shape, refused when malformed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatsessions import AsyncChatSessions, ChatSessions, Completion, InvalidInput
from chatsessions.testing import FakeLLMServer
from chatsessions.types import ToolCallDelta


def order_status(order_id: str) -> str:
    """Where an order is."""
    return f"order {order_id}: shipped"


ASK = [{"role": "system", "content": "You help."},
       {"role": "user", "content": "Where is order 1234?"}]


async def test_the_model_calls_a_tool_and_then_answers_from_its_output(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    done = await sessions.complete(ASK, tools=[order_status], parallel_tool_calls=False)
    assert done.finish_reason == "tool_calls"
    (call,) = done.tool_calls
    assert call.name == "order_status"
    assert json.loads(call.arguments) == {"order_id": "1234"}
    sent = fake_llm.requests[-1].params
    assert sent["tools"][0]["function"]["name"] == "order_status"
    assert sent["parallel_tool_calls"] is False
    history: list[dict[str, Any]] = [
        *ASK, {"role": "assistant", "content": None, "tool_calls": [call.as_openai()]},
        {"role": "tool", "tool_call_id": call.id, "content": "order 1234: shipped"}]
    answer = await sessions.complete(history, tools=[order_status])
    assert not answer.tool_calls
    assert "order 1234: shipped" in answer.text
    assert fake_llm.requests[-1].messages[-2]["tool_calls"][0]["id"] == call.id


async def test_a_streamed_call_comes_in_pieces_then_whole(
    sessions: AsyncChatSessions,
) -> None:
    items = [item async for item in sessions.stream_complete(
        ASK, tools=[{"name": "order_status", "parameters": {
            "type": "object", "properties": {"order_id": {"type": "string"}}}}],
        tool_choice="order_status")]
    pieces = [item for item in items if isinstance(item, ToolCallDelta)]
    last = items[-1]
    assert isinstance(last, Completion)
    (call,) = last.tool_calls
    assert pieces[0].id == call.id
    assert pieces[0].name == "order_status"
    assert "".join(p.arguments for p in pieces) == call.arguments
    assert not [item for item in items if isinstance(item, str)]


async def test_no_tools_no_tool_fields_are_sent(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    await sessions.complete(ASK)
    assert "tools" not in fake_llm.requests[-1].params
    await sessions.complete(ASK, tools=[order_status], tool_choice="none")
    assert fake_llm.requests[-1].params["tool_choice"] == "none"


@pytest.mark.parametrize(("messages", "needle"), [
    ([{"role": "tool", "content": "x"}], "tool_call_id"),
    ([{"role": "tool", "content": "x", "tool_call_id": "c1"}], "answers no call"),
    ([*ASK, {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]}],
     "c1 have no output"),
    ([*ASK, {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
      {"role": "user", "content": "and?"}], "c1 have no output"),
    ([*ASK, {"role": "assistant", "content": None,
             "tool_calls": [{"id": "", "function": {"name": "f"}}]}], "needs an id"),
    ([*ASK, {"role": "assistant", "tool_calls": "no"}], "must be a list"),
    ([{"role": "developer", "content": "x"}], "role of system"),
])
async def test_a_malformed_history_is_refused_before_the_model_is_asked(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer,
    messages: list[dict[str, Any]], needle: str,
) -> None:
    with pytest.raises(InvalidInput, match=needle):
        await sessions.complete(messages)
    assert fake_llm.requests == []


async def test_a_bad_tool_choice_is_refused(sessions: AsyncChatSessions) -> None:
    with pytest.raises(InvalidInput, match="tool_choice"):
        await sessions.complete(ASK, tools=[order_status], tool_choice="refund")
    with pytest.raises(InvalidInput, match="parallel_tool_calls"):
        await sessions.complete(ASK, tools=[order_status],
                                parallel_tool_calls="yes")  # type: ignore[arg-type]


def test_the_sync_twins_take_tools(settings_kwargs: dict[str, object]) -> None:
    with ChatSessions(**settings_kwargs) as chats:  # type: ignore[arg-type]
        done = chats.complete(ASK, tools=[order_status])
        assert done.tool_calls[0].name == "order_status"
        streamed = list(chats.stream_complete(ASK, tools=[order_status]))
        assert isinstance(streamed[-1], Completion)
        assert streamed[-1].tool_calls[0].arguments == done.tool_calls[0].arguments
