"""Export and import of tool calls (format version 3): an OpenAI-style list with calls and
outputs imports, the export carries calls, outputs and the chat's tools and imports back
unchanged, markdown prints them, version 2 still imports, and a history that would show
the model a call without its output (or the reverse) is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatsessions import AsyncChatSessions, InvalidInput
from chatsessions.engine.export import FORMAT, export_markdown
from chatsessions.types import Role, Tool, ToolCall
from tests.test_import import without_id

LOOKUP = {"type": "function", "function": {
    "name": "order_status", "description": "Where an order is.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}}


def _call(call_id: str, order: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": "order_status", "arguments": json.dumps({"order_id": order})}}


TRACKING: list[dict[str, Any]] = [
    {"role": "system", "content": "You help with orders."},
    {"role": "user", "content": "Where are orders 4417 and 4418?"},
    {"role": "assistant", "content": None,
     "tool_calls": [_call("call_a", "4417"), _call("call_b", "4418")]},
    {"role": "tool", "tool_call_id": "call_b", "content": "4418: delivered"},
    {"role": "tool", "tool_call_id": "call_a", "content": "4417: in transit"},
    {"role": "assistant", "content": "4417 is on its way; 4418 arrived."},
    {"role": "user", "content": "And 4419?"},
    {"role": "assistant", "content": "Let me check.", "tool_calls": [_call("call_c", "4419")]},
]


async def test_an_openai_list_with_calls_and_outputs_imports(
    sessions: AsyncChatSessions,
) -> None:
    chat_id = await sessions.import_chat(TRACKING)
    rows = (await sessions.history(chat_id))[1:]
    assert [m.role for m in rows] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.TOOL,
                                      Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert rows[1].tool_calls == (ToolCall("call_a", "order_status", '{"order_id": "4417"}'),
                                  ToolCall("call_b", "order_status", '{"order_id": "4418"}'))
    assert rows[1].content == ""
    assert [m.tool_call_id for m in rows[2:4]] == ["call_b", "call_a"]
    assert rows[4].tool_calls is None
    # the last answer still waits for its output: a legitimate state to import
    assert rows[6].content == "Let me check."
    # shown to a model exactly as it came in (but for the system prompt)
    assert [m.as_openai() for m in rows] == TRACKING[1:]


async def test_the_export_carries_tools_and_imports_back_unchanged(
    sessions: AsyncChatSessions,
) -> None:
    source = await sessions.import_chat(TRACKING)
    exported = await sessions.export_chat(source)
    exported["chat"]["tools"] = [LOOKUP]  # a chat's tools, as an export may hold them
    exported = json.loads(json.dumps(exported))
    copy = await sessions.import_chat(exported)
    again = await sessions.export_chat(copy)
    assert again["format"] == FORMAT == "chatsessions.chat.v4"
    assert again["chat"]["tools"] == [{"name": "order_status", "description": "Where an order is.",
                                       "parameters": LOOKUP["function"]["parameters"]}]
    exported["chat"]["tools"] = again["chat"]["tools"]  # the flat form it is stored in
    assert without_id(again) == without_id(exported)
    answer = next(m for m in again["messages"] if m["tool_calls"])
    assert answer["tool_calls"][0] == {"id": "call_a", "name": "order_status",
                                       "arguments": '{"order_id": "4417"}'}
    chat = await sessions.get_chat(copy)
    assert chat.tools == (Tool("order_status", "Where an order is.",
                               LOOKUP["function"]["parameters"]),)


async def test_markdown_prints_calls_and_outputs(sessions: AsyncChatSessions) -> None:
    chat_id = await sessions.import_chat(TRACKING)
    text = export_markdown(await sessions.get_chat(chat_id), await sessions.history(chat_id))
    assert '**Tool call** `order_status` (`call_a`)\n\n```json\n{"order_id": "4417"}\n```' in text
    assert "## Tool (output of `call_b`)\n\n4418: delivered" in text
    assert "## Assistant\n\nLet me check.\n\n**Tool call** `order_status` (`call_c`)" in text


async def test_version_2_exports_still_import(sessions: AsyncChatSessions) -> None:
    chat_id = await sessions.import_chat([{"role": "user", "content": "Hi"},
                                          {"role": "assistant", "content": "Hello"}])
    current = await sessions.export_chat(chat_id)
    v2 = {"format": "chatsessions.chat.v2",
          "chat": {k: v for k, v in current["chat"].items() if k != "tools"},
          "messages": [{k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id")}
                       for m in current["messages"]]}
    copy = await sessions.import_chat(v2)
    assert without_id(await sessions.export_chat(copy)) == without_id(current)


def _export(messages: list[dict[str, Any]], **chat: Any) -> dict[str, Any]:
    return {"format": FORMAT, "chat": {"system_prompt": "x", **chat}, "messages": messages}


REFUSED: list[tuple[Any, str]] = [
    ([{"role": "user", "content": "a"}, {"role": "tool", "tool_call_id": "nope",
                                         "content": "out"}],
     "messages.1.tool_call_id: no call of the answer before it has the id 'nope'"),
    ([{"role": "assistant", "content": None, "tool_calls": [_call("c1", "1")]},
      {"role": "user", "content": "next"}],
     "messages.1: the tool calls ['c1'] have no output before it"),
    ([{"role": "assistant", "content": None, "tool_calls": [_call("c1", "1")]},
      {"role": "tool", "tool_call_id": "c1", "content": "a"},
      {"role": "tool", "tool_call_id": "c1", "content": "again"}],
     "messages.2.tool_call_id: no call"),
    ([{"role": "assistant", "content": None}], "messages.0.content: only an answer that calls"),
    ([{"role": "user", "content": "a", "tool_calls": [_call("c1", "1")]}],
     "messages.0.tool_calls: only an assistant message calls tools"),
    ([{"role": "assistant", "content": "a", "tool_call_id": "c1"}],
     "messages.0.tool_call_id: a tool message needs one, and only a tool message has one"),
    ([{"role": "assistant", "content": None,
       "tool_calls": [_call("c1", "1"), _call("c1", "2")]}],
     "messages.0.tool_calls: two calls have the same id"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "bad name", "arguments": "{}"}}]}],
     "messages.0.tool_calls.0.name must be 1 to 64"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}],
     "messages.0.tool_calls.0.function.arguments"),
    (_export([], tools=[{"name": "no spaces please"}]), "chat.tools.0.name"),
    (_export([{"seq": 1, "role": "tool", "content": "a"}]), "messages.0.tool_call_id"),
    (_export([{"seq": 1, "role": "assistant", "content": "",
               "tool_calls": [{"id": "", "name": "f", "arguments": "{}"}]}]),
     "messages.0.tool_calls.0.id is empty"),
]


@pytest.mark.parametrize(("document", "problem"), REFUSED)
async def test_broken_tool_rounds_are_refused_and_store_nothing(
    sessions: AsyncChatSessions, document: Any, problem: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await sessions.import_chat(document)
    assert problem in str(refused.value)
    assert await sessions.list_chats(include_archived=True) == []
