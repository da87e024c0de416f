"""Structured output and the context options on /v1, with the official client against the
fake model: ``responses.parse(text_format=Model)``, ``chat.completions.parse(
response_format=Model)``, ``json_object``, a clear 400 for a bad schema, and
``truncation``/``context_management`` mapped onto the context policies (``disabled``
refusing a conversation too long for the window with ``context_length_exceeded``,
storing nothing). On SQLite and PostgreSQL."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from chatsessions import AsyncChatSessions
from chatsessions.testing import FakeLLMServer


class Order(BaseModel):
    item: str
    quantity: int


@pytest.fixture
def settings_kwargs(settings_kwargs: dict[str, object]) -> dict[str, object]:
    """A small window, so a few turns outgrow it."""
    return {**settings_kwargs, "context_window": 400, "max_output_tokens": 50}


def test_responses_parse_gives_the_model_instance(sdk: openai.OpenAI,
                                                  fake_llm: FakeLLMServer) -> None:
    parsed = sdk.responses.parse(model="fake-model", input="order 3 lamps",
                                 text_format=Order)
    assert parsed.output_parsed == Order(item="order", quantity=3)
    sent = fake_llm.requests[-1].params["response_format"]
    assert sent["json_schema"]["name"] == "Order"
    assert parsed.text.format.type == "json_schema"  # type: ignore[union-attr]
    # the answer is stored: the next turn continues it
    follow = sdk.responses.parse(model="fake-model", input="order 4 more",
                                 previous_response_id=parsed.id, text_format=Order)
    assert follow.output_parsed == Order(item="order", quantity=4)
    assert len(fake_llm.requests[-1].messages) == 4  # system, question, answer, question


def test_chat_completions_parse_gives_the_model_instance(sdk: openai.OpenAI,
                                                         fake_llm: FakeLLMServer) -> None:
    done = sdk.chat.completions.parse(
        model="fake-model", messages=[{"role": "user", "content": "order 7 chairs"}],
        response_format=Order)
    assert done.choices[0].message.parsed == Order(item="order", quantity=7)
    assert fake_llm.requests[-1].params["response_format"]["json_schema"]["name"] == "Order"
    plain = sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_object"})
    assert isinstance(json.loads(plain.choices[0].message.content or ""), dict)


def test_streamed_and_unstored_responses_take_the_format(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="fake-model", input="order 2 desks",
                              text_format=Order) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == Order(item="order", quantity=2)
    unstored = sdk.responses.parse(model="fake-model", input="order 5 pens",
                                   text_format=Order, store=False)
    assert unstored.output_parsed == Order(item="order", quantity=5)


@pytest.mark.parametrize("where", ["responses", "chat"])
def test_a_bad_schema_is_a_clear_400(sdk: openai.OpenAI, fake_llm: FakeLLMServer,
                                     where: str) -> None:
    bad = {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "strng"}}}}
    asked = len(fake_llm.requests)
    def ask() -> object:
        if where == "responses":
            return sdk.responses.create(model="fake-model", input="hi", text={
                "format": {"type": "json_schema", **bad}})  # type: ignore[typeddict-item]
        return sdk.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": bad})  # type: ignore[typeddict-item]
    with pytest.raises(openai.BadRequestError) as caught:
        ask()
    assert "not a valid JSON schema" in caught.value.message
    assert len(fake_llm.requests) == asked


async def test_truncation_disabled_refuses_a_long_conversation_storing_nothing(
        sdk: openai.OpenAI, fake_llm: FakeLLMServer,
        settings_kwargs: dict[str, object]) -> None:
    first = sdk.responses.create(model="fake-model", input="turn 0 " + "words " * 30)
    previous = first.id
    for n in range(1, 6):
        previous = sdk.responses.create(model="fake-model", input=f"turn {n} " + "words " * 30,
                                        previous_response_id=previous).id
    chat_id = first.conversation.id  # type: ignore[union-attr]
    async with AsyncChatSessions(**settings_kwargs) as sessions:  # type: ignore[arg-type]
        count = len(await sessions.history(chat_id, include_failed=True))
    asked = len(fake_llm.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="fake-model", input="one more", truncation="disabled",
                             previous_response_id=previous)
    assert caught.value.code == "context_length_exceeded"
    assert len(fake_llm.requests) == asked
    async with AsyncChatSessions(**settings_kwargs) as sessions:  # type: ignore[arg-type]
        assert len(await sessions.history(chat_id, include_failed=True)) == count
    # auto trims; compaction summarizes (a summary request, then the answer)
    trimmed = sdk.responses.create(model="fake-model", input="one more", truncation="auto",
                                   previous_response_id=previous)
    assert trimmed.truncation == "auto"
    assert trimmed.status == "completed"
    compacted = sdk.responses.create(
        model="fake-model", input="and one more", previous_response_id=trimmed.id,
        extra_body={"context_management": [{"type": "compaction"}]})
    assert compacted.status == "completed"
    async with AsyncChatSessions(**settings_kwargs) as sessions:  # type: ignore[arg-type]
        history = await sessions.history(chat_id)
    assert any(m.covers_seq is not None for m in history)  # a summary was written


def test_unknown_context_management_is_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="compaction"):
        sdk.responses.create(model="fake-model", input="hi",
                             extra_body={"context_management": [{"type": "other"}]})


PIXEL = "data:image/png;base64,iVBORw0KGgoAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


async def test_an_input_image_is_stored_with_its_message_and_sent_as_parts(
        sdk: openai.OpenAI, fake_llm: FakeLLMServer,
        settings_kwargs: dict[str, object]) -> None:
    content = [{"type": "input_text", "text": "What is this?"},
               {"type": "input_image", "image_url": PIXEL, "detail": "low"}]
    response = sdk.responses.create(model="fake-model", input=[  # type: ignore[misc,list-item]
        {"role": "user", "content": content}])
    assert response.status == "completed"
    shown = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}]
    assert fake_llm.requests[-1].messages[-1]["content"] == shown
    async with AsyncChatSessions(**settings_kwargs) as sessions:  # type: ignore[arg-type]
        question = (await sessions.history(response.conversation.id))[-2]  # type: ignore[union-attr]
    assert question.content == "What is this?"
    assert [p.as_openai() for p in question.parts or ()] == shown
    image_only = sdk.responses.create(model="fake-model", store=False, input=[  # type: ignore[misc,list-item]
        {"role": "user", "content": [content[1]]}])
    assert image_only.status == "completed"
    assert fake_llm.requests[-1].messages[-1]["content"] == shown[1:]
    with pytest.raises(openai.BadRequestError, match="https URL"):
        sdk.responses.create(model="fake-model", input=[  # type: ignore[misc,list-item]
            {"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}])


def test_chat_completions_send_image_parts_on(sdk: openai.OpenAI,
                                              fake_llm: FakeLLMServer) -> None:
    parts = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": PIXEL}}]
    done = sdk.chat.completions.create(model="fake-model", messages=[
        {"role": "user", "content": parts}])  # type: ignore[misc,list-item]
    assert done.choices[0].message.content
    assert fake_llm.requests[-1].messages[-1]["content"] == parts
    with pytest.raises(openai.BadRequestError, match="https URL"):
        sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x"}}]}])  # type: ignore[misc,list-item]
