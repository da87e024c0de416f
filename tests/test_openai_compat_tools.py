"""Tool calls on /v1 with the official ``openai`` client: chat completions (stateless,
plain and streamed) and Responses over stored chats (with ``previous_response_id``, with
``conversation``, streamed), and the conversation's items showing calls and outputs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage

from chatsessions.testing import FakeLLMServer
from tests.conftest import LiveServer

MODEL = "fake-model"
PARAMETERS = {"type": "object", "properties": {"order_id": {"type": "string"}},
              "required": ["order_id"]}
CHAT_TOOL: Any = {"type": "function", "function": {
    "name": "order_status", "description": "Where an order is.", "parameters": PARAMETERS}}
RESPONSE_TOOL: Any = {"type": "function", "name": "order_status",
                      "description": "Where an order is.", "parameters": PARAMETERS,
                      "strict": False}
ASKED: Any = [{"role": "user", "content": "Where is order 4417?"}]


def status_of(arguments: str) -> str:
    """The caller's own function: what it answers for a call's arguments."""
    return f"order {json.loads(arguments)['order_id']}: shipped"


# chat completions ---------------------------------------------------------------------

def test_chat_completion_calls_a_tool_and_answers_from_its_output(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    first = sdk.chat.completions.create(model=MODEL, messages=ASKED, tools=[CHAT_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "order_status", {"order_id": "4417"})
    offered = fake_llm.requests[-1].params
    assert offered["tools"] == [CHAT_TOOL]

    history: Any = [*ASKED, choice.message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": call.id,
                     "content": status_of(call.function.arguments)}]
    second = sdk.chat.completions.create(model=MODEL, messages=history, tools=[CHAT_TOOL])
    answer = second.choices[0]
    assert answer.finish_reason == "stop"
    seen = fake_llm.chat_histories()[-1]
    assert answer.message.content == FakeLLMServer.answer_for(seen)
    assert answer.message.content.startswith(
        'Tool results: order_status -> "order 4417: shipped"')
    assert seen[-2]["tool_calls"][0]["id"] == call.id
    assert http.get("/chats").json()["data"] == []  # stateless: nothing stored


def test_streamed_chat_completion_gives_the_same_calls_in_pieces(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    asked: Any = [{"role": "user", "content": "Orders 4417 and 4418?"}]
    plain = sdk.chat.completions.create(model=MODEL, messages=asked, tools=[CHAT_TOOL])
    chunks = list(sdk.chat.completions.create(model=MODEL, messages=asked, tools=[CHAT_TOOL],
                                              stream=True))
    assembled: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for piece in chunk.choices[0].delta.tool_calls or ():
            call = assembled.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id or ""
            call["name"] += (piece.function.name or "") if piece.function else ""
            call["arguments"] += (piece.function.arguments or "") if piece.function else ""
    expected = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                for c in plain.choices[0].message.tool_calls or []]
    assert [assembled[i] for i in sorted(assembled)] == expected
    assert len(expected) == 2  # one call per order number, in parallel
    pieces = sum(len(c.choices[0].delta.tool_calls or ()) for c in chunks)
    assert pieces > len(expected)  # the arguments came in more than one piece
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    serial = sdk.chat.completions.create(model=MODEL, messages=asked, tools=[CHAT_TOOL],
                                         parallel_tool_calls=False)
    assert len(serial.choices[0].message.tool_calls or []) == 1
    assert fake_llm.requests[-1].params["parallel_tool_calls"] is False


def test_chat_completion_tool_choice_and_refusals(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    other: Any = {"type": "function", "function": {"name": "refund", "parameters": PARAMETERS}}
    named = sdk.chat.completions.create(
        model=MODEL, messages=ASKED, tools=[CHAT_TOOL, other],
        tool_choice={"type": "function", "function": {"name": "refund"}})
    assert [c.function.name for c in named.choices[0].message.tool_calls or []] == ["refund"]
    assert fake_llm.requests[-1].params["tool_choice"] == {
        "type": "function", "function": {"name": "refund"}}
    none = sdk.chat.completions.create(model=MODEL, messages=ASKED, tools=[CHAT_TOOL],
                                       tool_choice="none")
    assert none.choices[0].message.tool_calls is None
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=ASKED,
                                    tools=[{"type": "custom", "custom": {"name": "x"}}])
    assert caught.value.body["param"] == "tools[0].type"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):  # an output whose call is not there
        sdk.chat.completions.create(model=MODEL, messages=[
            *ASKED, {"role": "tool", "tool_call_id": "call_x", "content": "?"}])
    with pytest.raises(openai.BadRequestError):  # a tool_choice naming no tool offered
        sdk.chat.completions.create(model=MODEL, messages=ASKED, tools=[CHAT_TOOL],
                                    tool_choice={"type": "function",
                                                 "function": {"name": "nope"}})


# responses ------------------------------------------------------------------------------

def only_call(output: list[Any]) -> ResponseFunctionToolCall:
    [call] = output
    assert isinstance(call, ResponseFunctionToolCall)
    return call


def item_kinds(http: httpx.Client, conversation_id: str) -> list[tuple[str, str]]:
    """(type, role or call id) of each item of the conversation, oldest first."""
    items = http.get(f"/v1/conversations/{conversation_id}/items",
                     params={"order": "asc"}).json()["data"]
    return [(item["type"], item.get("role") or item["call_id"]) for item in items]


def test_responses_call_a_tool_and_continue_with_previous_response_id(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    first = sdk.responses.create(model=MODEL, input="Where is order 4417?",
                                 tools=[RESPONSE_TOOL])
    call = only_call(first.output)
    assert (call.name, json.loads(call.arguments), call.status) == (
        "order_status", {"order_id": "4417"}, "completed")
    assert (call.id or "").startswith("fc_")
    assert first.tools[0].name == "order_status"  # type: ignore[union-attr]
    assert first.status == "completed"

    second = sdk.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[RESPONSE_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": status_of(call.arguments)}])
    assert second.output_text == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert '"order 4417: shipped"' in second.output_text
    assert second.previous_response_id == first.id
    chat_id = second.conversation.id  # type: ignore[union-attr]
    assert chat_id == first.conversation.id  # type: ignore[union-attr]
    assert item_kinds(http, chat_id) == [
        ("message", "user"), ("function_call", call.call_id),
        ("function_call_output", call.call_id), ("message", "assistant")]
    inputs = sdk.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in inputs] == ["function_call_output"]
    again = sdk.responses.retrieve(first.id)
    assert only_call(again.output).call_id == call.call_id

    # a new user message while the call waits for its output is refused, naming it
    waiting = sdk.responses.create(model=MODEL, input="Order 9?", tools=[RESPONSE_TOOL])
    with pytest.raises(openai.ConflictError) as caught:
        sdk.responses.create(model=MODEL, input="Hello?", previous_response_id=waiting.id)
    assert only_call(waiting.output).call_id in caught.value.message


def test_the_whole_input_with_calls_and_outputs_makes_a_new_chat(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    first = sdk.responses.create(model=MODEL, input="Where is order 4417?",
                                 tools=[RESPONSE_TOOL], instructions="Be brief.")
    call = only_call(first.output)
    replay: Any = [{"role": "user", "content": "Where is order 4417?"},
                   call.model_dump(exclude_none=True),
                   {"type": "function_call_output", "call_id": call.call_id,
                    "output": status_of(call.arguments)}]
    second = sdk.responses.create(model=MODEL, input=replay, tools=[RESPONSE_TOOL],
                                  instructions="Be brief.")
    seen = fake_llm.chat_histories()[-1]
    assert seen[0] == {"role": "system", "content": "Be brief."}
    assert second.output_text == FakeLLMServer.answer_for(seen)
    assert second.conversation.id != first.conversation.id  # type: ignore[union-attr]
    assert item_kinds(http, second.conversation.id) == [  # type: ignore[union-attr]
        ("message", "user"), ("function_call", call.call_id),
        ("function_call_output", call.call_id), ("message", "assistant")]


def test_responses_with_a_conversation_and_its_items(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    conversation = sdk.conversations.create()
    first = sdk.responses.create(model=MODEL, conversation=conversation.id,
                                 input="Orders 4417 and 4418?", tools=[RESPONSE_TOOL])
    calls = [item for item in first.output if isinstance(item, ResponseFunctionToolCall)]
    assert [json.loads(c.arguments)["order_id"] for c in calls] == ["4417", "4418"]
    second = sdk.responses.create(
        model=MODEL, conversation=conversation.id, tools=[RESPONSE_TOOL],
        input=[{"type": "function_call_output", "call_id": c.call_id,
                "output": status_of(c.arguments)} for c in calls])
    assert '"order 4418: shipped"' in second.output_text
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert [item.type for item in items] == [
        "message", "function_call", "function_call", "function_call_output",
        "function_call_output", "message"]
    fetched = sdk.conversations.items.retrieve(items[2].id, conversation_id=conversation.id)
    assert fetched.type == "function_call"
    assert fetched.call_id == calls[1].call_id
    page = sdk.conversations.items.list(conversation.id, order="asc", limit=2,
                                        after=items[1].id)
    assert [item.id for item in page.data] == [items[2].id, items[3].id]

    # items added by hand: a call, then its output; the model answers from them
    added = sdk.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "user", "content": "And order 77?"},
        {"type": "function_call", "call_id": "call_mine", "name": "order_status",
         "arguments": '{"order_id": "77"}'},
        {"type": "function_call_output", "call_id": "call_mine", "output": "order 77: lost"}])
    assert [item.type for item in added.data] == [
        "message", "function_call", "function_call_output"]
    assert item_kinds(http, conversation.id)[-2:] == [
        ("function_call", "call_mine"), ("function_call_output", "call_mine")]
    messages = http.get(f"/chats/{conversation.id}/messages").json()["data"]
    assert messages[-2]["tool_calls"][0]["id"] == "call_mine"
    assert messages[-1]["tool_call_id"] == "call_mine"


def test_streamed_responses_with_a_function_call(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    events = list(sdk.responses.create(model=MODEL, input="Where is order 4417?",
                                       tools=[RESPONSE_TOOL], stream=True))
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress",
                         "response.output_item.added"]
    assert kinds[-3:] == ["response.function_call_arguments.done",
                          "response.output_item.done", "response.completed"]
    assert "response.output_text.delta" not in kinds
    added = events[2].item  # type: ignore[union-attr]
    assert (added.type, added.arguments, added.status) == ("function_call", "", "in_progress")
    deltas = [e.delta for e in events  # type: ignore[union-attr]
              if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 1
    done = events[-1].response  # type: ignore[union-attr]
    call = only_call(done.output)
    assert "".join(deltas) == call.arguments == events[-3].arguments  # type: ignore[union-attr]
    assert call.id == added.id
    assert [e.sequence_number for e in events] == list(range(len(events)))
    stored = sdk.responses.retrieve(done.id)
    assert stored.output == done.output

    # the outputs, streamed: an ordinary text answer
    answer = list(sdk.responses.create(
        model=MODEL, previous_response_id=done.id, stream=True, tools=[RESPONSE_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": status_of(call.arguments)}]))
    final = answer[-1].response  # type: ignore[union-attr]
    [message] = final.output
    assert isinstance(message, ResponseOutputMessage)
    text = "".join(e.delta for e in answer  # type: ignore[union-attr]
                   if e.type == "response.output_text.delta")
    assert text == final.output_text == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])


def test_unstored_responses_with_tools_are_stateless(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    first = sdk.responses.create(model=MODEL, input="Where is order 4417?", store=False,
                                 tools=[RESPONSE_TOOL])
    call = only_call(first.output)
    replay: Any = [{"role": "user", "content": "Where is order 4417?"},
                   call.model_dump(exclude_none=True),
                   {"type": "function_call_output", "call_id": call.call_id,
                    "output": "order 4417: shipped"}]
    streamed = list(sdk.responses.create(model=MODEL, input=replay, store=False,
                                         tools=[RESPONSE_TOOL], stream=True))
    final = streamed[-1].response  # type: ignore[union-attr]
    assert final.output_text == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert http.get("/chats").json()["data"] == []


def test_refusals_name_what_is_wrong(sdk: openai.OpenAI, fake_llm: FakeLLMServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert caught.value.body["param"] == "tools[0].type"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model=MODEL, input=[
            {"type": "function_call", "call_id": "c1", "name": "order_status",
             "arguments": "{}"}])
    assert caught.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):  # an output for a call that was never made
        sdk.responses.create(model=MODEL, input=[
            {"type": "function_call_output", "call_id": "call_nope", "output": "x"}])
    assert fake_llm.requests == []


def test_another_tenants_response_is_not_found(
    keyed: tuple[LiveServer, str, str], fake_llm: FakeLLMServer
) -> None:
    server, acme, globex = keyed
    with openai.OpenAI(base_url=server.url + "/v1", api_key=acme, max_retries=0) as mine, \
            openai.OpenAI(base_url=server.url + "/v1", api_key=globex, max_retries=0) as theirs:
        first = mine.responses.create(model=MODEL, input="Where is order 4417?",
                                      tools=[RESPONSE_TOOL])
        call = only_call(first.output)
        output: Any = [{"type": "function_call_output", "call_id": call.call_id,
                        "output": "order 4417: shipped"}]
        with pytest.raises(openai.NotFoundError):
            theirs.responses.create(model=MODEL, previous_response_id=first.id, input=output)
        with pytest.raises(openai.NotFoundError):
            theirs.conversations.items.list(first.conversation.id)  # type: ignore[union-attr]
        assert mine.responses.create(model=MODEL, previous_response_id=first.id,
                                     input=output).output_text.startswith("Tool results:")
