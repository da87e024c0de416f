"""The OpenAI-compatible API with the official ``openai`` client, unmodified, against a live
server backed by FakeLLMServer, on SQLite and PostgreSQL: Responses and Conversations."""

from __future__ import annotations

import httpx
import openai
import pytest

from chatsessions import DEFAULT_SYSTEM_PROMPT
from chatsessions.prompts import DEMO_CHATS
from chatsessions.testing import FakeLLMServer, Fault

MODEL = "fake-model"


def answer(history: list[dict[str, str]]) -> str:
    return FakeLLMServer.answer_for(history)


def test_tutorial_chats_through_responses_with_conversations(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    """The tutorial's two customer-service chats, interleaved: each answer comes from its
    own conversation's whole history and never from the other one's."""
    conversations = [sdk.conversations.create(metadata={"customer": str(n)})
                     for n in range(len(DEMO_CHATS))]
    expected: list[list[dict[str, str]]] = [
        [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}] for _ in conversations]
    for turn in range(2):
        for index, conversation in enumerate(conversations):
            text = DEMO_CHATS[index][turn]
            response = sdk.responses.create(model=MODEL, input=text,
                                               conversation=conversation.id)
            expected[index].append({"role": "user", "content": text})
            seen = fake_llm.chat_histories()[-1]
            assert seen == expected[index]  # the full history of the right conversation
            assert response.output_text == answer(seen)
            assert response.status == "completed"
            assert response.conversation is not None
            assert response.conversation.id == conversation.id
            assert response.usage is not None
            assert response.usage.output_tokens > 0
            expected[index].append({"role": "assistant", "content": response.output_text})

    histories = fake_llm.chat_histories()
    assert len(histories) == 4
    for index in range(2):
        mine = set(DEMO_CHATS[index])
        theirs = set(DEMO_CHATS[1 - index])
        for history in histories[index::2]:
            said = {m["content"] for m in history if m["role"] == "user"}
            assert said <= mine
            assert not said & theirs

    for index, conversation in enumerate(conversations):  # the same chats through /chats
        chat = http.get(f"/chats/{conversation.id}").json()
        assert chat["message_count"] == 4
        assert chat["metadata"] == {"customer": str(index)}
        stored = http.get(f"/chats/{conversation.id}/messages").json()["data"]
        assert [m["content"] for m in stored] == [m["content"] for m in expected[index][1:]]
        items = sdk.conversations.items.list(conversation.id, order="asc")
        assert [(i.role, i.content[0].text) for i in items] == [  # type: ignore[union-attr]
            (m["role"], m["content"]) for m in expected[index][1:]]


async def test_tutorial_chats_with_the_async_client(
    async_sdk: openai.AsyncOpenAI, fake_llm: FakeLLMServer
) -> None:
    first = await async_sdk.conversations.create()
    second = await async_sdk.conversations.create()
    (a1, a2), (b1, _) = DEMO_CHATS
    one = await async_sdk.responses.create(model=MODEL, input=a1, conversation=first.id)
    await async_sdk.responses.create(model=MODEL, input=b1, conversation=second.id)
    two = await async_sdk.responses.create(model=MODEL, input=a2, conversation={"id": first.id})
    assert fake_llm.chat_histories()[-1] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": a1},
        {"role": "assistant", "content": one.output_text},
        {"role": "user", "content": a2},
    ]
    assert two.output_text == answer(fake_llm.chat_histories()[-1])
    again = await async_sdk.responses.retrieve(two.id)
    assert (again.id, again.output_text, again.previous_response_id) == (
        two.id, two.output_text, one.id)


def test_streaming_gives_the_same_text_as_a_plain_call(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    plain_conversation = sdk.conversations.create()
    streamed_conversation = sdk.conversations.create()
    question = DEMO_CHATS[0][0]
    plain = sdk.responses.create(model=MODEL, input=question,
                                    conversation=plain_conversation.id)

    with sdk.responses.stream(model=MODEL, input=question,
                                 conversation=streamed_conversation.id) as stream:
        kinds, deltas = [], []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == plain.output_text
    assert len(deltas) > 1
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert final.usage is not None
    assert final.usage.output_tokens > 0
    # the streamed turn was stored like any other
    assert sdk.responses.retrieve(final.id).output_text == plain.output_text

    events = list(sdk.responses.create(model=MODEL, input="and then?", stream=True,
                                          conversation=streamed_conversation.id))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == answer(fake_llm.chat_histories()[-1])


async def test_async_streaming_matches_too(
    async_sdk: openai.AsyncOpenAI, fake_llm: FakeLLMServer
) -> None:
    plain = await async_sdk.responses.create(model=MODEL, input="same words")
    async with async_sdk.responses.stream(model=MODEL, input="same words") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == plain.output_text
    assert final.id != plain.id  # two new chats


def test_previous_response_id_chains_and_branches(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    first = sdk.responses.create(model=MODEL, input="one")
    second = sdk.responses.create(model=MODEL, input="two", previous_response_id=first.id)
    history_one = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                   {"role": "user", "content": "one"},
                   {"role": "assistant", "content": first.output_text}]
    assert fake_llm.chat_histories()[-1] == [*history_one, {"role": "user", "content": "two"}]
    assert second.previous_response_id == first.id
    # a branch from the first response must not see the second exchange
    branch = sdk.responses.create(model=MODEL, input="three", previous_response_id=first.id)
    assert fake_llm.chat_histories()[-1] == [*history_one, {"role": "user", "content": "three"}]
    after = sdk.responses.create(model=MODEL, input="four", previous_response_id=branch.id)
    assert [m["content"] for m in fake_llm.chat_histories()[-1][1:]] == [
        "one", first.output_text, "three", branch.output_text, "four"]
    # the original line still goes on from its own tip
    sdk.responses.create(model=MODEL, input="five", previous_response_id=second.id)
    assert [m["content"] for m in fake_llm.chat_histories()[-1][1:]] == [
        "one", first.output_text, "two", second.output_text, "five"]

    got = sdk.responses.retrieve(after.id)
    assert got.output_text == after.output_text
    assert got.previous_response_id == branch.id
    items = sdk.responses.input_items.list(after.id)
    assert [i.content[0].text for i in items.data] == ["four"]  # type: ignore[union-attr]


def test_instructions_are_for_one_call_and_multi_message_input(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    conversation = sdk.conversations.create()
    sdk.responses.create(model=MODEL, input="hi", conversation=conversation.id,
                            instructions="Answer in French.")
    assert fake_llm.chat_histories()[-1][0] == {"role": "system",
                                                "content": "Answer in French."}
    sdk.responses.create(model=MODEL, conversation=conversation.id, input=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "earlier question"}]},
        {"role": "assistant", "content": "earlier answer"},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "new question"}]},
    ])
    seen = fake_llm.chat_histories()[-1]
    assert seen[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in seen[3:]] == [
        "earlier question", "earlier answer", "new question"]
    sdk.responses.create(model=MODEL, input="plain", conversation=conversation.id)
    assert fake_llm.chat_histories()[-1][0]["content"] == DEFAULT_SYSTEM_PROMPT
    assert http.get(f"/chats/{conversation.id}").json()["system_prompt"] == (
        DEFAULT_SYSTEM_PROMPT)
    assert http.get(f"/chats/{conversation.id}").json()["message_count"] == 8


def test_store_false_keeps_nothing(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    conversation = sdk.conversations.create()
    kept = sdk.responses.create(model=MODEL, input="remember me",
                                   conversation=conversation.id)
    chats_before = http.get("/chats").json()["data"]
    loose = sdk.responses.create(model=MODEL, input="and this?", store=False,
                                    conversation=conversation.id)
    seen = fake_llm.chat_histories()[-1]
    assert [m["content"] for m in seen[1:]] == ["remember me", kept.output_text, "and this?"]
    assert loose.output_text == answer(seen)
    with sdk.responses.stream(model=MODEL, input="and this?", store=False,
                                 previous_response_id=kept.id) as stream:
        assert stream.get_final_response().output_text == loose.output_text
    alone = sdk.responses.create(model=MODEL, input="nobody", store=False)
    assert alone.output_text == answer(fake_llm.chat_histories()[-1])
    assert http.get("/chats").json()["data"] == chats_before
    assert len(sdk.conversations.items.list(conversation.id).data) == 2
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(loose.id)


def test_conversation_and_items_lifecycle(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer, http: httpx.Client
) -> None:
    conversation = sdk.conversations.create(
        items=[{"type": "message", "role": "system", "content": "You sell bikes."},
               {"type": "message", "role": "user", "content": "Do you have red ones?"},
               {"type": "message", "role": "assistant", "content": "Yes, two models."}],
        metadata={"shop": "eu"})
    chat = http.get(f"/chats/{conversation.id}").json()
    assert (chat["system_prompt"], chat["metadata"]) == ("You sell bikes.", {"shop": "eu"})
    assert sdk.conversations.retrieve(conversation.id).metadata == {"shop": "eu"}
    updated = sdk.conversations.update(conversation.id, metadata={"shop": "us"})
    assert updated.metadata == {"shop": "us"}

    added = sdk.conversations.items.create(conversation.id, items=[
        {"role": "user", "content": "Which is cheaper?"},
        {"role": "assistant", "content": "The city bike."},
        {"role": "user", "content": "Is it in stock?"}])
    assert [i.id for i in added.data] == ["msg_3", "msg_4", "msg_5"]
    newest_first = sdk.conversations.items.list(conversation.id)
    assert [i.id for i in newest_first.data] == ["msg_5", "msg_4", "msg_3", "msg_2", "msg_1"]
    paged = [i.id for i in sdk.conversations.items.list(conversation.id, limit=2,
                                                            order="asc")]
    assert paged == ["msg_1", "msg_2", "msg_3", "msg_4", "msg_5"]
    item = sdk.conversations.items.retrieve("msg_4", conversation_id=conversation.id)
    assert (item.role, item.content[0].text) == ("assistant", "The city bike.")  # type: ignore

    sdk.conversations.items.delete("msg_5", conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve("msg_5", conversation_id=conversation.id)
    sdk.responses.create(model=MODEL, input="Can I order it?", conversation=conversation.id)
    assert [m["content"] for m in fake_llm.chat_histories()[-1]] == [
        "You sell bikes.", "Do you have red ones?", "Yes, two models.", "Which is cheaper?",
        "The city bike.", "Can I order it?"]

    deleted = sdk.conversations.delete(conversation.id)
    assert (deleted.id, deleted.deleted) == (conversation.id, True)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conversation.id)
    assert http.get(f"/chats/{conversation.id}").status_code == 404


def test_a_chat_made_through_chats_is_a_conversation(
    sdk: openai.OpenAI, http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    chat_id = http.post("/chats", json={"system_prompt": "Short answers."}).json()["id"]
    http.post(f"/chats/{chat_id}/messages", json={"content": "hello"})
    response = sdk.responses.create(model=MODEL, input="again", conversation=chat_id)
    assert [m["content"] for m in fake_llm.chat_histories()[-1]] == [
        "Short answers.", "hello", answer(fake_llm.chat_histories()[0]), "again"]
    assert response.id.endswith("_4")


def test_backend_failure_is_a_5xx_and_the_conversation_goes_on(
    sdk: openai.OpenAI, fake_llm: FakeLLMServer
) -> None:
    conversation = sdk.conversations.create()
    fake_llm.inject(Fault.status(500))
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.responses.create(model=MODEL, input="will this fail?",
                                conversation=conversation.id)
    assert failed.value.status_code >= 500
    assert isinstance(failed.value, openai.InternalServerError)
    assert failed.value.body["type"] == "server_error"  # type: ignore[index]

    fake_llm.inject(Fault.status(500))
    with pytest.raises(openai.InternalServerError):
        sdk.responses.create(model=MODEL, input="streamed?", stream=True,
                                conversation=conversation.id)

    fake_llm.inject(Fault.cut_stream(2))
    with sdk.responses.stream(model=MODEL, input="cut me off",
                                 conversation=conversation.id) as stream:
        events = list(stream)
    assert [e.type for e in events][:4] == ["response.created", "response.in_progress",
                                            "response.output_item.added",
                                            "response.content_part.added"]
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"  # type: ignore[union-attr]
    assert events[-1].response.error is not None  # type: ignore[union-attr]

    ok = sdk.responses.create(model=MODEL, input="still there?",
                                 conversation=conversation.id)
    assert fake_llm.chat_histories()[-1][1:] == [{"role": "user", "content": "still there?"}]
    assert ok.output_text == answer(fake_llm.chat_histories()[-1])
    assert [i.role for i in sdk.conversations.items.list(conversation.id)] == [
        "assistant", "user"]
