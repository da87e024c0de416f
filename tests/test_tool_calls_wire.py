"""Tool calls on the wire: the fake model calls tools deterministically (plain and
streamed in OpenAI's chunk shape, faults included), the official ``openai`` client parses
what it sends, and the ``openai`` backend passes tools and assembles streamed calls. The
embedded model refuses tools instead of pretending it has none."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from chatsessions.backends.base import Completion, StreamItem, ToolCallDelta
from chatsessions.backends.local import LocalBackend
from chatsessions.backends.openai import OpenAIBackend
from chatsessions.config import Settings
from chatsessions.engine.tools import FunctionTool
from chatsessions.errors import BackendError, InvalidInput
from chatsessions.testing import FakeLLMServer, Fault
from chatsessions.types import GenerationParams, Message, Role, Tool, ToolCall, ToolOptions


def order_status(order_id: str) -> str:
    """Where an order is."""
    return f"order {order_id}: in transit"


LOOKUP = FunctionTool.from_function(order_status).tool
REFUND = Tool("refund", "Refund an order.", {
    "type": "object",
    "properties": {"order_id": {"type": "integer"}, "reason": {"enum": ["late", "broken"]},
                   "notify": {"type": "boolean"}, "note": {"type": ["string", "null"]},
                   "lines": {"type": "array"}, "ignored": {"type": "string"}},
    "required": ["order_id", "reason", "notify", "note", "lines"]})
ASK = [{"role": "system", "content": "You help."},
       {"role": "user", "content": "Where is order 4417?"}]


@pytest.fixture
def client(fake_llm: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake_llm.base_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
async def backend(fake_llm: FakeLLMServer) -> AsyncIterator[OpenAIBackend]:
    opened = OpenAIBackend(Settings(openai_base_url=fake_llm.base_url, openai_api_key="x",
                                    max_retries=0, request_timeout=5.0))
    yield opened
    await opened.aclose()


def _tools(*tools: Tool) -> list[dict[str, Any]]:
    return [tool.as_openai() for tool in tools]


def test_the_official_client_parses_a_call(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model="m", messages=ASK,  # type: ignore[arg-type]
                                          tools=_tools(LOOKUP))  # type: ignore[arg-type]
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "order_status"
    assert json.loads(call.function.arguments) == {"order_id": "4417"}
    assert call.id.startswith("call_")
    assert done.usage is not None
    assert done.usage.completion_tokens > 0


def test_the_official_client_streams_a_call_in_pieces(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m", messages=ASK, tools=_tools(LOOKUP), stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True})
    pieces: list[Any] = []
    finish = None
    for chunk in stream:
        if chunk.choices:
            pieces += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert pieces[0].id
    assert pieces[0].function.name == "order_status"
    assert all(p.id is None and p.function.name is None for p in pieces[1:])
    assert len(pieces) > 2  # the arguments came in several pieces
    arguments = "".join(p.function.arguments or "" for p in pieces)
    assert json.loads(arguments) == {"order_id": "4417"}


def test_arguments_follow_the_schema(client: openai.OpenAI, fake_llm: FakeLLMServer) -> None:
    ask = [{"role": "user", "content": "Refund 12 please"}]
    done = client.chat.completions.create(model="m", messages=ask,  # type: ignore[arg-type]
                                          tools=_tools(LOOKUP, REFUND),  # type: ignore[arg-type]
                                          tool_choice={"type": "function",
                                                       "function": {"name": "refund"}})
    (call,) = done.choices[0].message.tool_calls or []
    assert call.function.name == "refund"
    assert json.loads(call.function.arguments) == {
        "order_id": 12, "reason": "late", "notify": True, "note": "12", "lines": []}
    words = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "  my   parcel "}],
        tools=_tools(LOOKUP))  # type: ignore[arg-type]
    (call,) = words.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == {"order_id": "my parcel"}
    assert fake_llm.requests[0].params["tool_choice"] == {
        "type": "function", "function": {"name": "refund"}}


def test_several_order_numbers_call_in_parallel_unless_refused(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Orders 4417, 4418 and 4419?"}]
    both = client.chat.completions.create(model="m", messages=ask,  # type: ignore[arg-type]
                                          tools=_tools(LOOKUP))  # type: ignore[arg-type]
    calls = both.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments)["order_id"] for c in calls] == [
        "4417", "4418", "4419"]
    assert len({c.id for c in calls}) == 3
    one = client.chat.completions.create(model="m", messages=ask,  # type: ignore[arg-type]
                                         tools=_tools(LOOKUP),  # type: ignore[arg-type]
                                         parallel_tool_calls=False)
    assert len(one.choices[0].message.tool_calls or []) == 1


def test_no_call_without_tools_with_choice_none_or_after_outputs(
    client: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    for extra in ({}, {"tools": _tools(LOOKUP), "tool_choice": "none"}):
        done = client.chat.completions.create(model="m", messages=ASK, **extra)  # type: ignore[call-overload]
        assert done.choices[0].message.tool_calls is None
        assert done.choices[0].message.content == FakeLLMServer.answer_for(ASK)
    call = {"id": "call_1", "type": "function",
            "function": {"name": "order_status", "arguments": '{"order_id": "4417"}'}}
    shown = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
             {"role": "tool", "tool_call_id": "call_1", "content": "4417: in transit"}]
    answer = client.chat.completions.create(model="m", messages=shown,  # type: ignore[arg-type]
                                            tools=_tools(LOOKUP))  # type: ignore[arg-type]
    text = answer.choices[0].message.content or ""
    assert text.startswith('Tool results: order_status -> "4417: in transit" [')
    assert text == FakeLLMServer.answer_for(shown)
    assert answer.choices[0].finish_reason == "stop"


def test_faults_apply_to_tool_calls(client: openai.OpenAI, fake_llm: FakeLLMServer) -> None:
    fake_llm.inject(Fault.status(503))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=ASK,  # type: ignore[arg-type]
                                       tools=_tools(LOOKUP))  # type: ignore[arg-type]
    fake_llm.inject(Fault.cut_stream(2))
    with pytest.raises(openai.APIConnectionError):
        for _ in client.chat.completions.create(
                model="m", messages=ASK, tools=_tools(LOOKUP), stream=True):  # type: ignore[arg-type]
            pass


async def test_the_backend_passes_tools_and_reads_the_calls(
    backend: OpenAIBackend, fake_llm: FakeLLMServer
) -> None:
    options = ToolOptions((LOOKUP,), choice="required", parallel=False)
    done = await backend.complete(ASK, GenerationParams(), "fake-model", tools=options)
    assert done.finish_reason == "tool_calls"
    assert done.text == ""
    (call,) = done.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("order_status", {"order_id": "4417"})
    sent = fake_llm.requests[-1].params
    assert sent["tools"] == [LOOKUP.as_openai()]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)

    # the answer and the output, as stored messages render them, continue the conversation
    history = [*ASK, Message("c", 2, Role.ASSISTANT, "", tool_calls=done.tool_calls).as_openai(),
               Message("c", 3, Role.TOOL, "in transit", tool_call_id=call.id).as_openai()]
    final = await backend.complete(history, GenerationParams(), "fake-model", tools=options)
    assert final.tool_calls == ()
    assert final.text == FakeLLMServer.answer_for(history)
    assert fake_llm.requests[-1].messages == history

    plain = await backend.complete(ASK, GenerationParams(), "fake-model")
    assert "tools" not in fake_llm.requests[-1].params
    assert plain.tool_calls == ()


async def test_the_backend_assembles_streamed_calls(backend: OpenAIBackend) -> None:
    ask = [{"role": "user", "content": "Orders 4417 and 4418?"}]
    items: list[StreamItem] = [item async for item in backend.stream(
        ask, GenerationParams(), "fake-model", tools=ToolOptions((LOOKUP,)))]
    *deltas, done = items
    assert isinstance(done, Completion)
    assert all(isinstance(d, ToolCallDelta) for d in deltas)
    assert done.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in done.tool_calls] == [
        ("order_status", {"order_id": "4417"}), ("order_status", {"order_id": "4418"})]
    pieces = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert [(d.index, d.id) for d in pieces if d.id] == [
        (0, done.tool_calls[0].id), (1, done.tool_calls[1].id)]
    assert "".join(d.arguments for d in pieces if d.index == 1) == done.tool_calls[1].arguments
    assert done.usage.completion_tokens > 0


async def test_a_stream_cut_during_a_call_is_a_backend_error(
    backend: OpenAIBackend, fake_llm: FakeLLMServer
) -> None:
    fake_llm.inject(Fault.cut_stream(3))
    with pytest.raises(BackendError, match="broke off"):
        async for _ in backend.stream(ASK, GenerationParams(), "fake-model",
                                      tools=ToolOptions((LOOKUP,))):
            pass


async def test_the_embedded_model_refuses_tools() -> None:
    local = LocalBackend(Settings())
    offered = ToolOptions((LOOKUP,))
    with pytest.raises(InvalidInput, match="the embedded model cannot call tools"):
        await local.complete(ASK, GenerationParams(), "m", tools=offered)
    with pytest.raises(InvalidInput, match="the embedded model cannot call tools"):
        async for _ in local.stream(ASK, GenerationParams(), "m", tools=offered):
            pass


def test_the_embedded_model_is_shown_earlier_calls_as_text() -> None:
    from chatsessions.backends.local import _plain

    call = ToolCall("call_1", "order_status", '{"order_id": "4417"}')
    answer = Message("c", 2, Role.ASSISTANT, "Checking.", tool_calls=(call,)).as_openai()
    assert _plain(answer) == {
        "role": "assistant",
        "content": 'Checking.\n[called order_status({"order_id": "4417"})]'}
    output = Message("c", 3, Role.TOOL, "in transit", tool_call_id="call_1").as_openai()
    assert _plain(output) == {"role": "tool", "content": "in transit"}
    plain = {"role": "user", "content": "hi"}
    assert _plain(plain) is plain
