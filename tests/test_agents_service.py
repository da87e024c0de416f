"""The OpenAI Agents SDK, unmodified, against a live ``chatsessions serve`` on the fake
model: an agent with a Python function tool, plain, chained with
``previous_response_id``, with an ``OpenAIConversationsSession`` and streamed. Each final
answer is built from the tool's output, and the stored conversation shows the call, then
its output, then the answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from agents import (
    Agent,
    OpenAIConversationsSession,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
)
from pydantic import BaseModel

from chatsessions.service.openai_compat.items import parse_response_id
from chatsessions.testing import FakeLLMServer
from tests.conftest import LiveServer

LOOKED_UP: list[str] = []
NO_TRACES = RunConfig(tracing_disabled=True)


@function_tool
def order_status(order_id: str) -> str:
    """Where an order is.

    Args:
        order_id: the order number
    """
    LOOKED_UP.append(order_id)
    return f"order {order_id}: in transit"


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=live_server.url + "/v1", api_key="any key",
                                  max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def agent(client: openai.AsyncOpenAI) -> Agent:
    LOOKED_UP.clear()
    return Agent(name="support", instructions="You help with orders.", tools=[order_status],
                 model=OpenAIResponsesModel(model="fake-model", openai_client=client))


def items(http: httpx.Client, chat_id: str) -> list[dict[str, object]]:
    """The stored conversation as its items, oldest first."""
    found = http.get(f"/v1/conversations/{chat_id}/items",
                     params={"order": "asc", "limit": 100}).json()["data"]
    assert isinstance(found, list)
    return found


def shape(found: list[dict[str, object]]) -> list[str]:
    return [str(item.get("role") or item["type"]) for item in found]


def chat_of(response_id: str | None) -> str:
    parsed = parse_response_id(response_id or "")
    assert parsed is not None
    return parsed[0]


def assert_answered_from_the_tool(final: str, fake_llm: FakeLLMServer, order: str) -> None:
    seen = fake_llm.chat_histories()[-1]
    assert seen[0] == {"role": "system", "content": "You help with orders."}  # instructions
    assert seen[-1] == {"role": "tool", "tool_call_id": seen[-2]["tool_calls"][0]["id"],
                        "content": f"order {order}: in transit"}
    assert final == FakeLLMServer.answer_for(seen)
    assert final.startswith(f'Tool results: order_status -> "order {order}: in transit" [')


def assert_call_output_answer(found: list[dict[str, object]], order: str, final: str) -> None:
    """The last three items: the call, its output, the answer built from it."""
    call, output, answer = found[-3:]
    assert (call["type"], call["name"]) == ("function_call", "order_status")
    assert json.loads(str(call["arguments"])) == {"order_id": order}
    assert (output["type"], output["call_id"]) == ("function_call_output", call["call_id"])
    assert output["output"] == f"order {order}: in transit"
    assert answer["type"] == "message"
    assert answer["content"] == [{"type": "output_text", "text": final, "annotations": [],
                                  "logprobs": []}]


async def test_a_plain_run(agent: Agent, fake_llm: FakeLLMServer, http: httpx.Client) -> None:
    result = await Runner.run(agent, "Where is order 4417?", run_config=NO_TRACES)
    assert LOOKED_UP == ["4417"]
    assert_answered_from_the_tool(result.final_output, fake_llm, "4417")
    found = items(http, chat_of(result.last_response_id))
    assert shape(found) == ["user", "function_call", "function_call_output", "assistant"]
    assert_call_output_answer(found, "4417", result.final_output)


async def test_runs_chained_with_previous_response_id(
    agent: Agent, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    # within a run, each model call continues the previous response (only new items sent)
    first = await Runner.run(agent, "Where is order 4417?", run_config=NO_TRACES,
                             auto_previous_response_id=True)
    assert_answered_from_the_tool(first.final_output, fake_llm, "4417")
    # the next run continues the first one's last response
    second = await Runner.run(agent, "And order 4418?", run_config=NO_TRACES,
                              previous_response_id=first.last_response_id)
    assert LOOKED_UP == ["4417", "4418"]
    assert_answered_from_the_tool(second.final_output, fake_llm, "4418")
    chat_id = chat_of(second.last_response_id)
    assert chat_id == chat_of(first.last_response_id)  # one chat, continued
    found = items(http, chat_id)
    assert shape(found) == ["user", "function_call", "function_call_output", "assistant"] * 2
    assert_call_output_answer(found, "4418", second.final_output)
    # the model saw the whole chat though the SDK sent only what was new
    assert "order 4417: in transit" in json.dumps(fake_llm.chat_histories()[-1])


async def test_a_run_with_an_openai_conversations_session(
    agent: Agent, client: openai.AsyncOpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    session = OpenAIConversationsSession(openai_client=client)
    first = await Runner.run(agent, "Where is order 4417?", session=session,
                             run_config=NO_TRACES)
    assert_answered_from_the_tool(first.final_output, fake_llm, "4417")
    second = await Runner.run(agent, "And order 4419?", session=session,
                              run_config=NO_TRACES)
    assert LOOKED_UP == ["4417", "4419"]
    assert_answered_from_the_tool(second.final_output, fake_llm, "4419")
    assert "order 4417: in transit" in json.dumps(fake_llm.chat_histories()[-1])
    found = items(http, session.session_id)
    assert shape(found) == ["user", "function_call", "function_call_output", "assistant"] * 2
    assert_call_output_answer(found, "4419", second.final_output)
    assert [m.get("role") for m in await session.get_items()] == [
        "user", None, None, "assistant", "user", None, None, "assistant"]


async def test_a_streamed_run(agent: Agent, fake_llm: FakeLLMServer, http: httpx.Client) -> None:
    run = Runner.run_streamed(agent, "Orders 4417 and 4418?", run_config=NO_TRACES)
    kinds = [event.type async for event in run.stream_events()]
    assert "raw_response_event" in kinds
    assert LOOKED_UP == ["4417", "4418"]
    seen = fake_llm.chat_histories()[-1]
    assert run.final_output == FakeLLMServer.answer_for(seen)
    assert '"order 4418: in transit"' in run.final_output
    found = items(http, chat_of(run.last_response_id))
    assert shape(found) == ["user", "function_call", "function_call",
                            "function_call_output", "function_call_output", "assistant"]
    assert [item["output"] for item in found[3:5]] == [
        "order 4417: in transit", "order 4418: in transit"]


class Delivery(BaseModel):
    city: str
    days: int


async def test_a_run_with_an_output_type_and_a_tool(
    client: openai.AsyncOpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    """An agent with ``output_type`` sends ``text.format`` on every call, the one after
    the tool's output too: that answer is the agent's final output, so it must be JSON
    of the shape asked, and the SDK parses it into the model."""
    LOOKED_UP.clear()
    agent = Agent(name="support", instructions="You help with orders.",
                  tools=[order_status], output_type=Delivery,
                  model=OpenAIResponsesModel(model="fake-model", openai_client=client))
    result = await Runner.run(agent, "Where is order 4417?",
                              run_config=NO_TRACES)
    assert LOOKED_UP == ["4417"]
    assert isinstance(result.final_output, Delivery)
    after_tool = fake_llm.requests[-1]
    assert after_tool.messages[-1]["role"] == "tool"
    assert after_tool.params["response_format"]["json_schema"]["name"] == "final_output"
    found = items(http, chat_of(result.last_response_id))
    assert shape(found) == ["user", "function_call", "function_call_output", "assistant"]
