"""/v1 error paths with the official client: OpenAI's error shape and statuses, unsupported
features refused with a 400 before anything is stored, tenants isolated by API key."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from chatsessions.testing import FakeLLMServer
from tests.conftest import LiveServer

MODEL = "fake-model"


def test_unknown_ids_are_not_found(sdk: openai.OpenAI, fake_llm: FakeLLMServer) -> None:
    conversation = sdk.conversations.create()
    response = sdk.responses.create(model=MODEL, input="hi", conversation=conversation.id)
    calls: list[tuple[Any, str | None]] = [
        (lambda: sdk.responses.create(model=MODEL, input="hi", conversation="nope"),
         "conversation"),
        (lambda: sdk.responses.create(model=MODEL, input="hi", conversation="nope",
                                         stream=True), "conversation"),
        (lambda: sdk.responses.create(model=MODEL, input="hi",
                                         previous_response_id="resp_nope_2"),
         "previous_response_id"),
        (lambda: sdk.responses.create(model=MODEL, input="hi",
                                         previous_response_id=response.id[:-1] + "1"),
         "previous_response_id"),  # a user message, not a response
        (lambda: sdk.responses.retrieve("garbage"), "response_id"),
        (lambda: sdk.responses.input_items.list("resp_x_1"), "response_id"),
        (lambda: sdk.conversations.retrieve("nope"), None),
        (lambda: sdk.conversations.update("nope", metadata={}), None),
        (lambda: sdk.conversations.delete("nope"), None),
        (lambda: sdk.conversations.items.list("nope"), None),
        (lambda: sdk.conversations.items.create("nope", items=[
            {"role": "user", "content": "x"}]), None),
        (lambda: sdk.conversations.items.retrieve("msg_99", conversation_id=conversation.id),
         "item_id"),
        (lambda: sdk.conversations.items.delete("bogus", conversation_id=conversation.id),
         "item_id"),
        (lambda: sdk.models.retrieve("no-such-model"), "model"),
    ]
    for call, param in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        body = caught.value.body
        assert isinstance(body, dict)
        assert body["code"] == "not_found"
        assert body["type"] == "invalid_request_error"
        if param is not None:
            assert body["param"] == param
    assert len(fake_llm.requests) == 1


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        # images are taken in the last (the asked) user message only
        ({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/a.png"}]},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "hi"}]},
         "input[0].content[0].type"),
        ({"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "see"},
            {"type": "input_file", "file_id": "file-1"}]}]}, "input[0].content[1].type"),
        # the output of a call the conversation never made
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "{}"}]}, None),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": {}}]}, None),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "tool_choice": "required"}, "tool_choice"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f",
                     "arguments": "{}"}]}, "input"),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format"),
        ({"input": "x", "reasoning": {"effort": "low"}}, "reasoning"),
        ({"input": "x", "background": True, "store": False}, "background"),
        ({"input": "x", "include": ["message.output_text.logprobs"]}, "include"),
        ({"input": "x", "extra_body": {"frobnicate": 1}}, "frobnicate"),
        ({"input": "x", "temperature": 5}, None),
        ({"input": ""}, None),
        ({"input": [{"role": "assistant", "content": "I answer, nobody asked"}]}, "input"),
        ({"input": [{"role": "critic", "content": "hm"}]}, "input[0].role"),
        ({"input": "x", "previous_response_id": "resp_a_2"}, "previous_response_id"),
        ({}, "input"),
    ],
)
def test_unsupported_or_invalid_requests_are_400_and_store_nothing(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, kwargs: dict[str, Any], param: str | None
) -> None:
    conversation = sdk.conversations.create()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model=MODEL, conversation=conversation.id, **kwargs)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error"
    assert body["message"]
    if param is not None:
        assert body["param"] == param
    assert fake_llm.requests == []
    assert sdk.conversations.items.list(conversation.id).data == []


def test_conversation_items_refused_before_storing(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.conversations.create(items=[{"role": "user", "content": "hi"},
                                           {"role": "system", "content": "late"}])
    assert caught.value.body["param"] == "items[1].role"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.conversations.create(items=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}])
    assert caught.value.body["param"] == "items[0].content[0].type"  # type: ignore[index]
    conversation = sdk.conversations.create()
    with pytest.raises(openai.BadRequestError):
        sdk.conversations.items.create(conversation.id, items=[
            {"role": "user", "content": "fine"}, {"role": "developer", "content": "no"}])
    assert sdk.conversations.items.list(conversation.id).data == []


def test_error_shape_on_v1_and_unchanged_elsewhere(http: httpx.Client) -> None:
    cases = [
        http.post("/v1/responses", content=b"{not json",
                  headers={"content-type": "application/json"}),
        http.get("/v1/nowhere"),
        http.delete("/v1/models"),
        http.post("/v1/conversations", json={"items": "not a list"}),
        http.post("/v1/chat/completions", json={"model": MODEL}),
    ]
    assert [r.status_code for r in cases] == [400, 404, 404, 400, 400]
    for response in cases:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    assert cases[4].json()["error"]["param"] == "messages"
    legacy = http.get("/chats/nope").json()["error"]
    assert set(legacy) == {"type", "message"}
    assert legacy["type"] == "not_found"


def test_models(sdk: openai.OpenAI) -> None:
    assert [m.id for m in sdk.models.list()] == [MODEL]
    assert sdk.models.retrieve(MODEL).owned_by == "chatsessions"


def test_tenants_only_see_their_own_conversations(
    keyed: tuple[LiveServer, str, str], fake_llm: FakeLLMServer
) -> None:
    server, key_a, key_b = keyed
    base = server.url + "/v1"
    with openai.OpenAI(base_url=base, api_key=key_a, max_retries=0) as a, \
            openai.OpenAI(base_url=base, api_key=key_b, max_retries=0) as b, \
            openai.OpenAI(base_url=base, api_key="cs_wrong", max_retries=0) as stranger:
        conversation = a.conversations.create(metadata={"owner": "acme"})
        response = a.responses.create(model=MODEL, input="private", conversation=conversation.id)
        attempts = [
            lambda: b.conversations.retrieve(conversation.id),
            lambda: b.conversations.update(conversation.id, metadata={"owner": "globex"}),
            lambda: b.conversations.delete(conversation.id),
            lambda: b.conversations.items.list(conversation.id),
            lambda: b.conversations.items.create(conversation.id, items=[
                {"role": "user", "content": "peek"}]),
            lambda: b.conversations.items.delete("msg_1", conversation_id=conversation.id),
            lambda: b.responses.create(model=MODEL, input="peek", conversation=conversation.id),
            lambda: b.responses.create(model=MODEL, input="peek", conversation=conversation.id,
                                       stream=True),
            lambda: b.responses.create(model=MODEL, input="peek",
                                       previous_response_id=response.id),
            lambda: b.responses.retrieve(response.id),
            lambda: b.responses.input_items.list(response.id),
        ]
        for attempt in attempts:
            with pytest.raises(openai.NotFoundError):
                attempt()
        with pytest.raises(openai.AuthenticationError) as caught:
            stranger.conversations.retrieve(conversation.id)
        assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]

        assert a.conversations.retrieve(conversation.id).metadata == {"owner": "acme"}
        assert len(a.conversations.items.list(conversation.id).data) == 2
        assert len(fake_llm.requests) == 1
        assert all("peek" not in str(h) for h in fake_llm.chat_histories())
