"""/v1/chat/completions with the official client: a stateless pass-through to the backend."""

from __future__ import annotations

import httpx
import openai
import pytest

from chatsessions.testing import FakeLLMServer, Fault
from tests.conftest import LiveServer

MODEL = "fake-model"
MESSAGES = [
    {"role": "developer", "content": "You are terse."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "Let me check."},
    {"role": "user", "content": [{"type": "text", "text": "It is order 42."}]},
]
SEEN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Where is my parcel?"},
    {"role": "assistant", "content": "Let me check."},
    {"role": "user", "content": "It is order 42."},
]


def test_completion_passes_through_and_stores_nothing(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, live_server: LiveServer
) -> None:
    completion = sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0.2, max_tokens=100)  # type: ignore[arg-type]
    assert fake_llm.chat_histories() == [SEEN]
    assert fake_llm.requests[0].params["temperature"] == 0.2
    choice = completion.choices[0]
    assert choice.message.content == FakeLLMServer.answer_for(SEEN)
    assert (choice.message.role, choice.finish_reason) == ("assistant", "stop")
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens) > 0
    cut = sdk.chat.completions.create(model=MODEL, messages=MESSAGES,  # type: ignore[arg-type]
                                         max_completion_tokens=2)
    assert cut.choices[0].finish_reason == "length"
    assert len((cut.choices[0].message.content or "").split()) == 2
    with httpx.Client(base_url=live_server.url) as http:
        assert http.get("/chats").json()["data"] == []


def test_streamed_completion(sdk: openai.OpenAI, fake_llm: FakeLLMServer) -> None:
    chunks = list(sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == FakeLLMServer.answer_for(SEEN)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1


async def test_async_client_streams_too(
    async_sdk: openai.AsyncOpenAI, fake_llm: FakeLLMServer
) -> None:
    stream = await async_sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == FakeLLMServer.answer_for(SEEN)
    plain = await async_sdk.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore
    assert plain.choices[0].message.content == "".join(parts)


def test_backend_failures(sdk: openai.OpenAI, fake_llm: FakeLLMServer) -> None:
    fake_llm.inject(Fault.status(500))
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    fake_llm.inject(Fault.status(503))
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES,  # type: ignore[arg-type]
                                       stream=True)
    fake_llm.inject(Fault.cut_stream(2))
    stream = sdk.chat.completions.create(model=MODEL, messages=MESSAGES,  # type: ignore
                                            stream=True)
    with pytest.raises(openai.APIError, match="model"):
        for _ in stream:
            pass
    ok = sdk.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert ok.choices[0].message.content == FakeLLMServer.answer_for(SEEN)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        # images are taken in user messages only
        ({"messages": [{"role": "assistant", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
            {"role": "user", "content": "hi"}]},
         "messages[0].content[0].type"),
        # an output without its call, a call without its output: the model never sees them
        ({"messages": [{"role": "tool", "tool_call_id": "c", "content": "{}"}]}, None),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
         None),
        ({"messages": [{"role": "function", "name": "f", "content": "{}"}]},
         "messages[0].role"),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, None),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"n": 2}, "n"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"temperature": 3}, None),
        ({"messages": []}, "messages"),
    ],
)
def test_unsupported_requests_are_400(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, change: dict[str, object], param: str | None
) -> None:
    kwargs: dict[str, object] = {"model": MODEL, "messages": MESSAGES, **change}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error"
    if param is not None:
        assert body["param"] == param
    assert fake_llm.requests == []
