"""Tool rounds in the rest of a chat's life, through the library: a chat's own
``tool_choice``, edit and fork (calls and outputs copied whole; a fork cut inside a round
waits for the rest), search over tool outputs, and usage counting each round. Every test
runs on SQLite and on PostgreSQL (the ``sessions`` fixture)."""

from __future__ import annotations

import pytest

from chatsessions import AsyncChatSessions, InvalidInput, Role
from chatsessions.testing import FakeLLMServer

ORDER = {"name": "order_status", "description": "Where an order is.",
         "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                        "required": ["order_id"]}}
REFUND = {"name": "refund", "description": "Refund an order.",
          "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}},
                         "required": ["order_id"]}}


def called(fake_llm: FakeLLMServer) -> object:
    """The ``tool_choice`` the last model request carried (None: left out)."""
    return fake_llm.requests[-1].params.get("tool_choice")


async def test_a_chat_keeps_its_tool_choice(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    with pytest.raises(InvalidInput, match="tool_choice"):
        await sessions.create_chat("S", tools=[ORDER], tool_choice="refund")
    chat_id = await sessions.create_chat("S", tools=[ORDER, REFUND], tool_choice="refund")
    assert (await sessions.get_chat(chat_id)).tool_choice == "refund"
    asked = await sessions.send(chat_id, "order 5?")
    assert [c.name for c in asked.tool_calls or ()] == ["refund"]
    assert called(fake_llm) == {"type": "function", "function": {"name": "refund"}}
    await sessions.cancel_tool_calls(chat_id)
    # a call's own choice wins over the chat's
    assert not (await sessions.send(chat_id, "order 6?", tool_choice="none")).tool_calls
    assert called(fake_llm) == "none"

    chat = await sessions.update_chat(chat_id, tool_choice="none")
    assert chat.tool_choice == "none"
    assert not (await sessions.send(chat_id, "order 7?")).tool_calls
    with pytest.raises(InvalidInput, match="tool_choice"):
        await sessions.update_chat(chat_id, tool_choice="nope")
    await sessions.update_chat(chat_id, tool_choice="refund")
    # tools without the chosen one: the choice goes with it, not left naming nothing
    assert (await sessions.update_chat(chat_id, tools=[ORDER])).tool_choice is None
    assert (await sessions.update_chat(chat_id, tools=[ORDER, REFUND],
                                       tool_choice="required")).tool_choice == "required"
    assert (await sessions.update_chat(chat_id, title="kept")).tool_choice == "required"
    await sessions.send(chat_id, "order 8?")
    assert called(fake_llm) == "required"
    await sessions.cancel_tool_calls(chat_id)
    assert (await sessions.update_chat(chat_id, tool_choice=None)).tool_choice is None

    # an export carries it and an import keeps it; a fork copies it
    await sessions.update_chat(chat_id, tool_choice="refund")
    copy = await sessions.import_chat(await sessions.export_chat(chat_id))
    assert (await sessions.get_chat(copy)).tool_choice == "refund"
    fork = await sessions.fork_chat(chat_id)
    assert (await sessions.get_chat(fork)).tool_choice == "refund"
    broken = await sessions.export_chat(chat_id)
    broken["chat"]["tool_choice"] = "missing"
    with pytest.raises(InvalidInput, match=r"chat\.tool_choice"):
        await sessions.import_chat(broken)


def shape(messages: list[object]) -> list[tuple[object, ...]]:
    return [(m.role, m.content, m.tool_calls, m.tool_call_id)  # type: ignore[attr-defined]
            for m in messages]


async def test_edit_and_fork_keep_calls_and_outputs_whole(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S")
    calls = (await sessions.send(chat_id, "where are orders 12 and 34?",
                                 tools=[ORDER])).tool_calls or ()
    assert len(calls) == 2
    await sessions.send_tool_results(chat_id, {calls[0].id: "12: shipped",
                                               calls[1].id: "34: lost"})
    await sessions.send(chat_id, "thanks")
    history = await sessions.history(chat_id)
    thanks = history[-2]
    assert (thanks.role, thanks.content) == (Role.USER, "thanks")

    fork_id, answer = await sessions.edit_message(chat_id, thanks.seq, "thank you!")
    forked = await sessions.history(fork_id)
    assert shape(forked[:thanks.seq]) == shape(history[:thanks.seq])
    assert [m.content for m in forked[thanks.seq:]] == ["thank you!", answer.content]
    assert await sessions.pending_tool_calls(fork_id) == []
    # the model was shown the round whole: the calls, then both outputs
    shown = fake_llm.chat_histories()[-1]
    assert [m["role"] for m in shown] == ["system", "user", "assistant", "tool", "tool",
                                          "assistant", "user"]
    assert [m.get("tool_call_id") for m in shown[3:5]] == [c.id for c in calls]

    # cut between the two outputs: the fork waits for the other one, and goes on with it
    first_output = history[3]
    assert first_output.tool_call_id == calls[0].id
    cut = await sessions.fork_chat(chat_id, up_to_seq=first_output.seq)
    assert await sessions.pending_tool_calls(cut) == [calls[1]]
    next_answer = await sessions.send_tool_results(cut, {calls[1].id: "34: found"})
    assert "12: shipped" in next_answer.content
    assert "34: found" in next_answer.content
    # the source chat is untouched
    assert shape(await sessions.history(chat_id)) == shape(history)


async def test_search_finds_a_tool_output(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S", tools=[ORDER])
    (call,) = (await sessions.send(chat_id, "order 55?")).tool_calls or ()
    await sessions.send_tool_results(chat_id, {call.id: "handed to the courier Quokkabird"})
    hits = await sessions.search("Quokkabird")
    output = next(m for m in await sessions.history(chat_id) if m.role is Role.TOOL)
    # the output, and the answer quoting it
    found = {(hit.chat_id, hit.seq): hit for hit in hits}
    assert len(found) == 2
    hit = found[(chat_id, output.seq)]
    assert hit.role is Role.TOOL
    assert "[Quokkabird]" in hit.snippet


async def test_usage_counts_each_round(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat("S", tools=[ORDER])
    for order in ("1", "2"):
        (call,) = (await sessions.send(chat_id, f"order {order}?")).tool_calls or ()
        await sessions.send_tool_results(chat_id, {call.id: f"{order}: shipped"})
    await sessions.send(chat_id, "thanks", tool_choice="none")
    answers = [m for m in await sessions.history(chat_id) if m.role is Role.ASSISTANT]
    assert len(answers) == 5  # two calls, two answers from outputs, one plain answer
    assert all(m.prompt_tokens > 0 and m.completion_tokens > 0 for m in answers)
    report = await sessions.usage()
    assert report.turns == 5
    assert report.prompt_tokens == sum(m.prompt_tokens for m in answers)
    assert report.completion_tokens == sum(m.completion_tokens for m in answers)
    chat = await sessions.get_chat(chat_id)
    assert (chat.prompt_tokens, chat.completion_tokens) == (
        report.prompt_tokens, report.completion_tokens)
