"""The OpenAI Agents SDK runs a function-tool agent against the fake model, plain and
streamed: the fake is enough to test a tool loop of one's own, and the SDK accepts the
calls it sends. (Its run against ``chatsessions serve``'s /v1 comes with the tool loop.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    RunConfig,
    Runner,
    function_tool,
)

from chatsessions.testing import FakeLLMServer

LOOKED_UP: list[str] = []


@function_tool
def order_status(order_id: str) -> str:
    """Where an order is.

    Args:
        order_id: the order number
    """
    LOOKED_UP.append(order_id)
    return f"order {order_id}: in transit"


@pytest.fixture
async def agent(fake_llm: FakeLLMServer) -> AsyncIterator[Agent]:
    LOOKED_UP.clear()
    client = openai.AsyncOpenAI(base_url=fake_llm.base_url, api_key="x", max_retries=0)
    yield Agent(name="support", instructions="You help with orders.", tools=[order_status],
                model=OpenAIChatCompletionsModel(model="fake-model", openai_client=client))
    await client.close()


NO_TRACES = RunConfig(tracing_disabled=True)


async def test_an_agent_calls_the_tool_and_answers_from_its_output(
    agent: Agent, fake_llm: FakeLLMServer
) -> None:
    result = await Runner.run(agent, "Where is order 4417?", run_config=NO_TRACES)
    assert LOOKED_UP == ["4417"]
    assert result.final_output.startswith(
        'Tool results: order_status -> "order 4417: in transit" [')
    first, second = fake_llm.chat_histories()
    assert first[-1] == {"role": "user", "content": "Where is order 4417?"}
    assert second[-1]["role"] == "tool"
    assert second[-2]["tool_calls"][0]["function"]["name"] == "order_status"
    assert result.final_output == FakeLLMServer.answer_for(second)


async def test_a_streamed_agent_run_calls_the_tool_too(
    agent: Agent, fake_llm: FakeLLMServer
) -> None:
    run = Runner.run_streamed(agent, "Orders 4417 and 4418?", run_config=NO_TRACES)
    kinds = [event.type async for event in run.stream_events()]
    assert "raw_response_event" in kinds
    assert LOOKED_UP == ["4417", "4418"]
    assert run.final_output == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert '"order 4418: in transit"' in run.final_output
