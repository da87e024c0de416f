"""Background responses take what a foreground response takes, with the official client:
function tools (an answer calling them completes with ``function_call`` items), tool
outputs continuing it in the background, structured output, images and the context
options; retrieve, resumed streams and cancel as for text-only runs; a refused input is
still a 400 with nothing stored. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseFunctionToolCall
from pydantic import BaseModel

from chatsessions.config import Settings
from chatsessions.service import create_app
from chatsessions.testing import FakeLLMServer, Fault
from tests.conftest import LiveServer

MODEL = "fake-model"
DEADLINE = 30.0
PARAMETERS = {"type": "object", "properties": {"order_id": {"type": "string"}},
              "required": ["order_id"]}
TOOL: Any = {"type": "function", "name": "order_status", "description": "Where an order is.",
             "parameters": PARAMETERS, "strict": False}
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


class Order(BaseModel):
    item: str
    quantity: int


@pytest.fixture
def settings_kwargs(settings_kwargs: dict[str, object]) -> dict[str, object]:
    """A stall holds a run in flight for long (the fake ends it when it stops); a small
    window, so a few turns outgrow it."""
    return {**settings_kwargs, "request_timeout": 60.0, "context_window": 400,
            "max_output_tokens": 50}


def ended(sdk: openai.OpenAI, response_id: str) -> Response:
    """The response once it is no longer queued or in progress."""
    deadline = time.monotonic() + DEADLINE
    while (polled := sdk.responses.retrieve(response_id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, "the background response did not end"
        time.sleep(0.05)
    return polled


def only_call(output: list[Any]) -> ResponseFunctionToolCall:
    [call] = output
    assert isinstance(call, ResponseFunctionToolCall)
    return call


def outputs_for(call: ResponseFunctionToolCall) -> Any:
    order = json.loads(call.arguments)["order_id"]
    return [{"type": "function_call_output", "call_id": call.call_id,
             "output": f"order {order}: shipped"}]


def kinds(http: httpx.Client, conversation_id: str) -> list[str]:
    items = http.get(f"/v1/conversations/{conversation_id}/items",
                     params={"order": "asc"}).json()["data"]
    return [item["type"] for item in items]


def test_a_background_tool_call_completes_and_a_background_round_continues_it(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    created = sdk.responses.create(model=MODEL, input="Where is order 4417?", tools=[TOOL],
                                   background=True)
    assert created.status in ("queued", "in_progress")
    assert created.tools[0].name == "order_status"  # type: ignore[union-attr]
    first = ended(sdk, created.id)
    assert first.status == "completed"
    call = only_call(first.output)
    assert (call.name, json.loads(call.arguments)) == ("order_status", {"order_id": "4417"})
    assert fake_llm.requests[-1].params["tools"][0]["function"]["name"] == "order_status"
    # its stream again: the call's events, then the same output as retrieved
    events = list(sdk.responses.retrieve(created.id, stream=True))
    assert "response.function_call_arguments.done" in [e.type for e in events]
    assert events[-1].response.output == first.output  # type: ignore[union-attr]

    second = sdk.responses.create(model=MODEL, previous_response_id=first.id, tools=[TOOL],
                                  input=outputs_for(call), background=True)
    answer = ended(sdk, second.id)
    assert answer.status == "completed"
    assert answer.output_text == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert '"order 4417: shipped"' in answer.output_text
    chat_id = answer.conversation.id  # type: ignore[union-attr]
    assert chat_id == first.conversation.id  # type: ignore[union-attr]
    assert kinds(http, chat_id) == ["message", "function_call", "function_call_output",
                                    "message"]
    resumed = list(sdk.responses.retrieve(second.id, stream=True, starting_after=1))
    assert resumed[0].sequence_number == 2
    assert resumed[-1].response.output_text == answer.output_text  # type: ignore[union-attr]
    follow_up = sdk.responses.create(model=MODEL, input="Thanks!", previous_response_id=second.id)
    assert follow_up.conversation.id == chat_id  # type: ignore[union-attr]


@pytest.fixture
def other(settings_kwargs: dict[str, object]) -> Iterator[openai.OpenAI]:
    """The official client on another replica: the same database, its own process state."""
    server = LiveServer(create_app(Settings(**settings_kwargs))).start()  # type: ignore[arg-type]
    with openai.OpenAI(base_url=server.url + "/v1", api_key="any key", max_retries=0) as sdk:
        yield sdk
    server.stop()


def test_another_replica_streams_a_background_round_once_it_has_ended(
    sdk: openai.OpenAI, other: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    first = sdk.responses.create(model=MODEL, input="Where is order 31?", tools=[TOOL])
    fake_llm.inject(Fault.stall(after_chunks=1, seconds=1.5))
    created = sdk.responses.create(model=MODEL, previous_response_id=first.id, tools=[TOOL],
                                   input=outputs_for(only_call(first.output)), background=True)
    # a tool round stores nothing before its end: the other replica waits for it
    events = list(other.responses.retrieve(created.id, stream=True))
    assert events[-1].type == "response.completed"
    assert '"order 31: shipped"' in events[-1].response.output_text  # type: ignore[union-attr]
    assert events[-1].response.output == ended(sdk, created.id).output  # type: ignore[union-attr]
    # rebuilt from storage for a reader that had seen part of the call: its closing events
    tail = list(other.responses.retrieve(first.id, stream=True, starting_after=4))
    assert [(e.type, e.sequence_number) for e in tail] == [
        ("response.function_call_arguments.done", 5), ("response.output_item.done", 6),
        ("response.completed", 7)]
    assert tail[0].arguments == only_call(first.output).arguments  # type: ignore[union-attr]


def test_a_background_tool_round_is_cancelled_keeping_its_outputs(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    first = sdk.responses.create(model=MODEL, input="Where is order 12?", tools=[TOOL])
    call = only_call(first.output)
    fake_llm.inject(Fault.stall(after_chunks=1, seconds=50))
    asked = len(fake_llm.requests)
    created = sdk.responses.create(model=MODEL, previous_response_id=first.id, tools=[TOOL],
                                   input=outputs_for(call), background=True)
    deadline = time.monotonic() + DEADLINE
    while len(fake_llm.requests) == asked:  # the model call is under way
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sdk.responses.cancel(created.id).status == "cancelled"
    assert sdk.responses.retrieve(created.id).status == "cancelled"
    chat_id = first.conversation.id  # type: ignore[union-attr]
    # a function that ran must not run again: its output stays, waiting for an answer
    assert kinds(http, chat_id) == ["message", "function_call", "function_call_output"]


def test_a_streamed_tool_round_is_resumable_under_its_answers_id(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    first = sdk.responses.create(model=MODEL, input="Where is order 5?", tools=[TOOL])
    fake_llm.inject(Fault.stall(after_chunks=1, seconds=1.0))
    stream = sdk.responses.create(model=MODEL, previous_response_id=first.id, tools=[TOOL],
                                  input=outputs_for(only_call(first.output)), stream=True)
    opened = next(iter(stream))
    stream.close()  # the client goes away: the round goes on
    response_id = opened.response.id  # type: ignore[union-attr]
    rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=0))
    assert rest[-1].type == "response.completed"
    text = rest[-1].response.output_text  # type: ignore[union-attr]
    assert '"order 5: shipped"' in text
    assert sdk.responses.retrieve(response_id).output_text == text


def test_background_structured_output_parses_as_in_the_foreground(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    created = sdk.responses.parse(model=MODEL, input="order 3 lamps", text_format=Order,
                                  background=True)
    assert created.text.format.type == "json_schema"  # type: ignore[union-attr]
    done = ended(sdk, created.id)
    assert done.status == "completed"
    assert Order.model_validate_json(done.output_text) == Order(item="order", quantity=3)
    assert fake_llm.requests[-1].params["response_format"]["json_schema"]["name"] == "Order"
    assert done.text.format.type == "json_schema"  # type: ignore[union-attr]
    with sdk.responses.stream(response_id=created.id, text_format=Order) as stream:
        assert stream.get_final_response().output_parsed == Order(item="order", quantity=3)


def test_background_images_and_context_options_reach_the_turn(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    content = [{"type": "input_text", "text": "What is this?"},
               {"type": "input_image", "image_url": PIXEL, "detail": "low"}]
    created = sdk.responses.create(model=MODEL, background=True, input=[  # type: ignore[misc,list-item]
        {"role": "user", "content": content}])
    assert ended(sdk, created.id).status == "completed"
    assert fake_llm.requests[-1].messages[-1]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}]
    # compaction: a summary request before the answer (the window is tiny here)
    previous = created.id
    for n in range(4):
        previous = sdk.responses.create(model=MODEL, input=f"turn {n} " + "words " * 40,
                                        previous_response_id=previous).id
    asked = len(fake_llm.requests)
    refused = ended(sdk, sdk.responses.create(model=MODEL, input="one more", background=True,
                                              previous_response_id=previous,
                                              truncation="disabled").id)
    assert refused.status == "failed"
    assert "window" in (refused.error.message if refused.error else "")
    assert len(fake_llm.requests) == asked  # refused before the model was asked
    compacted = sdk.responses.create(
        model=MODEL, input="and one more", previous_response_id=previous, background=True,
        truncation="auto", extra_body={"context_management": [{"type": "compaction"}]})
    assert compacted.truncation == "auto"
    assert ended(sdk, compacted.id).status == "completed"
    assert len(fake_llm.requests) == asked + 2  # the summary, then the answer


def test_refused_background_inputs_are_400s_storing_nothing(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    bad = {"type": "json_schema", "name": "x",
           "schema": {"type": "object", "properties": {"a": {"type": "strng"}}}}
    with pytest.raises(openai.BadRequestError, match="not a valid JSON schema"):
        sdk.responses.create(model=MODEL, input="hi", text={"format": bad},  # type: ignore[typeddict-item]
                             background=True)
    assert http.get("/chats").json()["data"] == []
    assert fake_llm.requests == []

    first = sdk.responses.create(model=MODEL, input="Where is order 9?", tools=[TOOL])
    chat_id = first.conversation.id  # type: ignore[union-attr]
    asked = len(fake_llm.requests)
    wrong: Any = [{"type": "function_call_output", "call_id": "call_nope", "output": "?"}]
    with pytest.raises(openai.BadRequestError, match="call"):
        sdk.responses.create(model=MODEL, previous_response_id=first.id, input=wrong,
                             tools=[TOOL], background=True)
    with pytest.raises(openai.ConflictError):  # a new message while the call waits
        sdk.responses.create(model=MODEL, previous_response_id=first.id, input="Hello?",
                             background=True)
    assert kinds(http, chat_id) == ["message", "function_call"]
    assert len(fake_llm.requests) == asked
    # the right outputs run
    right = sdk.responses.create(model=MODEL, previous_response_id=first.id, tools=[TOOL],
                                 input=outputs_for(only_call(first.output)), background=True)
    assert ended(sdk, right.id).status == "completed"


def test_tools_too_large_to_echo_still_run_in_the_background(sdk: openai.OpenAI) -> None:
    tools = [{**TOOL, "name": f"tool_{n}", "description": "Long. " * 1600} for n in range(2)]
    created = sdk.responses.create(model=MODEL, input="hi", tools=tools, background=True)
    done = ended(sdk, created.id)
    assert done.status == "completed"
    assert done.tools == []  # left out of the echo kept with the run, as a retrieve shows
