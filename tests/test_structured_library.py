"""Structured output, images and a per-call context policy through the library: ``send``,
``stream``, ``answer`` and ``complete`` pass a response format to the model and give the
answer back parsed (the text is what is stored); content given as parts is stored with
its parts and shown to the model as parts; ``context_policy`` overrides the chat's for
one call. On SQLite and PostgreSQL, against the fake model."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import BaseModel

from chatsessions import AsyncChatSessions, ChatSessions
from chatsessions.errors import ContextTooLong, InvalidAnswer, InvalidInput
from chatsessions.testing import FakeLLMServer
from chatsessions.types import ContextPolicy, ImagePart, Message, ResponseFormat, TextPart

PIXEL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()


class Order(BaseModel):
    item: str
    quantity: int


async def test_send_with_a_model_class_returns_the_parsed_instance(
        sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await sessions.create_chat()
    answer = await sessions.send(chat_id, "order 3 lamps", response_format=Order)
    assert answer.parsed == Order(item="order", quantity=3)
    assert json.loads(answer.content) == {"item": "order", "quantity": 3}
    sent = fake_llm.requests[-1].params["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Order"
    stored = (await sessions.history(chat_id))[-1]
    assert stored.content == answer.content
    assert stored.parsed is None


async def test_stream_answer_and_complete_take_a_format_too(
        sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await sessions.create_chat()
    items = [item async for item in sessions.stream(
        chat_id, "order 7 chairs", response_format=ResponseFormat.json_object())]
    last = items[-1]
    assert isinstance(last, Message)
    assert last.parsed == json.loads(last.content)
    assert "".join(i for i in items if isinstance(i, str)) == last.content
    unstored = await sessions.answer(chat_id, "order 2 desks", response_format={
        "type": "json_schema", "name": "order", "schema": Order.model_json_schema()})
    assert unstored.parsed == {"item": "order", "quantity": 2}
    done = await sessions.complete([{"role": "user", "content": "order 5 pens"}],
                                   response_format=Order)
    assert Order.model_validate_json(done.text) == Order(item="order", quantity=5)
    assert fake_llm.requests[-1].params["response_format"]["json_schema"]["name"] == "Order"


async def test_without_a_format_nothing_is_sent_and_nothing_parsed(
        sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await sessions.create_chat()
    answer = await sessions.send(chat_id, "hello", response_format={"type": "text"})
    assert answer.parsed is None
    assert "response_format" not in fake_llm.requests[-1].params


async def test_an_answer_that_does_not_fit_raises_and_stays_stored(
        sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await sessions.create_chat()
    fake_llm.script("not json at all")
    with pytest.raises(InvalidAnswer, match="does not fit Order") as caught:
        await sessions.send(chat_id, "order 1 lamp", response_format=Order)
    assert caught.value.partial == "not json at all"
    assert (await sessions.history(chat_id))[-1].content == "not json at all"


async def test_an_invalid_schema_is_refused_before_anything_is_stored(
        sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await sessions.create_chat()
    asked = len(fake_llm.requests)
    with pytest.raises(InvalidInput, match="not a valid JSON schema"):
        await sessions.send(chat_id, "hi", response_format={
            "type": "json_schema", "name": "x", "schema": {"type": "strng"}})
    assert len(fake_llm.requests) == asked
    assert len(await sessions.history(chat_id)) == 1  # the system prompt alone


async def test_content_as_parts_is_stored_and_shown_as_parts(
        sessions: AsyncChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id = await sessions.create_chat()
    await sessions.send(chat_id, [{"type": "input_text", "text": "What is this?"},
                                  {"type": "input_image", "image_url": PIXEL}])
    shown = fake_llm.requests[-1].messages[-1]["content"]
    assert shown == [{"type": "text", "text": "What is this?"},
                     {"type": "image_url", "image_url": {"url": PIXEL}}]
    question = (await sessions.history(chat_id))[-2]
    assert question.content == "What is this?"
    assert question.parts == (TextPart("What is this?"), ImagePart(PIXEL))
    # text alone, given as parts, is stored as text
    await sessions.send(chat_id, [{"type": "text", "text": "and now?"}])
    assert (await sessions.history(chat_id))[-2].parts is None
    # a keyed send looks for its key under the lease before writing: parts kept there too
    await sessions.send(chat_id, [{"type": "input_text", "text": "And this?"},
                                  {"type": "input_image", "image_url": PIXEL}],
                        idempotency_key="with-an-image")
    question = (await sessions.history(chat_id))[-2]
    assert question.parts == (TextPart("And this?"), ImagePart(PIXEL))


async def test_the_embedded_model_refuses_images_storing_nothing(
        sessions: AsyncChatSessions) -> None:
    chat_id = await sessions.create_chat(backend="local")
    with pytest.raises(InvalidInput, match="cannot see images"):
        await sessions.send(chat_id, [{"type": "image_url", "image_url": {"url": PIXEL}}])
    history = await sessions.history(chat_id, include_failed=True)
    assert all(m.parts is None for m in history)


async def test_a_per_call_policy_none_refuses_a_long_chat_storing_nothing(
        settings_kwargs: dict[str, object], fake_llm: FakeLLMServer) -> None:
    kwargs = {**settings_kwargs, "context_window": 400, "max_output_tokens": 50}
    async with AsyncChatSessions(**kwargs) as sessions:  # type: ignore[arg-type]
        chat_id = await sessions.create_chat()
        for n in range(6):
            await sessions.send(chat_id, f"turn {n} " + "words " * 30)
        count = len(await sessions.history(chat_id))
        asked = len(fake_llm.requests)
        with pytest.raises(ContextTooLong):
            await sessions.send(chat_id, "one more", context_policy="none")
        assert len(await sessions.history(chat_id, include_failed=True)) == count
        assert len(fake_llm.requests) == asked
        # the chat's own policy (trim) still answers, and is unchanged
        await sessions.send(chat_id, "one more", context_policy=ContextPolicy.TRIM)
        assert (await sessions.get_chat(chat_id)).context_policy is ContextPolicy.TRIM


def test_the_sync_twins_pass_the_new_options(
        settings_kwargs: dict[str, object]) -> None:
    with ChatSessions(**settings_kwargs) as lib:  # type: ignore[arg-type]
        chat_id = lib.create_chat()
        assert lib.send(chat_id, "order 4 cups", response_format=Order).parsed == Order(
            item="order", quantity=4)
        last = list(lib.stream(chat_id, "order 6 cups", response_format=Order))[-1]
        assert isinstance(last, Message)
        assert last.parsed == Order(item="order", quantity=6)
