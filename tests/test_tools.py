"""Tool definitions: derived from Python functions through pydantic, checked when given as
dicts, and functions run with validated arguments, failures becoming outputs the model
reads instead of crashes."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import date
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from chatsessions.engine.tools import MAX_TOOLS, FunctionTool, check_tools, render_output
from chatsessions.errors import InvalidInput
from chatsessions.types import Message, Role, Tool, ToolCall, ToolOptions


def order_status(order_id: str, verbose: bool = False) -> str:
    """Look up where an order is.

    Args:
        order_id: the order number printed on the receipt
        verbose (bool): include every scan of the parcel
    """
    return f"order {order_id}: shipped" + (" (3 scans)" if verbose else "")


async def refund(order_id: str, amount: float, reason: Literal["late", "broken"]) -> dict[str, Any]:
    """Refund part of an order.

    :param order_id: the order
    :param amount: how much, in euros
    """
    await asyncio.sleep(0)
    return {"order_id": order_id, "refunded": amount, "reason": reason}


class Address(BaseModel):
    street: str
    city: str


def ship_to(address: Address, on: date, items: Annotated[list[str], Field(min_length=1)]) -> str:
    return f"{len(items)} items to {address.city} on {on.isoformat()}"


def test_a_functions_schema_comes_from_its_hints_and_docstring() -> None:
    tool = FunctionTool.from_function(order_status).tool
    assert tool.name == "order_status"
    assert tool.description == "Look up where an order is."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "order_id": {"type": "string",
                         "description": "the order number printed on the receipt"},
            "verbose": {"type": "boolean", "default": False,
                        "description": "include every scan of the parcel"},
        },
        "required": ["order_id"],
        "additionalProperties": False,
    }
    sphinx = FunctionTool.from_function(refund).tool
    assert sphinx.description == "Refund part of an order."
    props = sphinx.parameters["properties"]
    assert props["amount"] == {"type": "number", "description": "how much, in euros"}
    assert props["reason"] == {"enum": ["late", "broken"], "type": "string"}
    assert sphinx.parameters["required"] == ["order_id", "amount", "reason"]


def test_nested_models_and_constraints_reach_the_schema() -> None:
    schema = FunctionTool.from_function(ship_to).tool.parameters
    assert schema["properties"]["items"]["minItems"] == 1
    assert schema["properties"]["on"] == {"type": "string", "format": "date"}
    assert schema["properties"]["address"] == {"$ref": "#/$defs/Address"}
    assert set(schema["$defs"]["Address"]["properties"]) == {"street", "city"}


def test_functions_that_cannot_be_offered_are_refused() -> None:
    def splat(*args: int) -> None: ...

    def anything(**kwargs: int) -> None: ...

    def positional(a: int, /) -> None: ...

    for function in (splat, anything, positional):
        with pytest.raises(InvalidInput, match=function.__name__):
            FunctionTool.from_function(function)


async def test_a_call_runs_with_validated_arguments() -> None:
    lookup = FunctionTool.from_function(order_status)
    assert await lookup.run(ToolCall("c1", "order_status", '{"order_id": "4417"}')) == (
        "order 4417: shipped")
    assert await lookup.run(ToolCall("c2", "order_status",
                                     '{"order_id": "9", "verbose": true}')) == (
        "order 9: shipped (3 scans)")
    money = FunctionTool.from_function(refund)
    output = await money.run(ToolCall("c3", "refund",
                                      '{"order_id": "9", "amount": "12.5", "reason": "late"}'))
    assert json.loads(output) == {"order_id": "9", "refunded": 12.5, "reason": "late"}
    shipping = FunctionTool.from_function(ship_to)
    arguments = {"address": {"street": "Main 1", "city": "Graz"}, "on": "2026-03-01",
                 "items": ["a", "b"]}
    assert await shipping.run(ToolCall("c4", "ship_to", json.dumps(arguments))) == (
        "2 items to Graz on 2026-03-01")


async def test_a_sync_function_runs_off_the_event_loop() -> None:
    seen: list[str] = []

    def where() -> str:
        seen.append(threading.current_thread().name)
        return "here"

    assert await FunctionTool.from_function(where).run(ToolCall("c", "where", "")) == "here"
    assert seen != [threading.current_thread().name]


@pytest.mark.parametrize(("arguments", "problem"), [
    ("{not json", "error: the arguments are not valid JSON"),
    ('{"verbose": true}', "error: invalid arguments for order_status: order_id: Field required"),
    ('{"order_id": "1", "colour": "red"}', "colour: Extra inputs are not permitted"),
    ('{"order_id": ["1"]}', "order_id: Input should be a valid string"),
    ("[1, 2]", "error: invalid arguments for order_status"),
])
async def test_bad_arguments_become_an_error_output(arguments: str, problem: str) -> None:
    output = await FunctionTool.from_function(order_status).run(
        ToolCall("c", "order_status", arguments))
    assert problem in output


async def test_a_tool_that_raises_becomes_an_error_output() -> None:
    def broken(order_id: str) -> str:
        raise LookupError(f"no order {order_id}")

    async def broken_async() -> str:
        raise RuntimeError("database down")

    assert await FunctionTool.from_function(broken).run(
        ToolCall("c", "broken", '{"order_id": "7"}')) == "error: LookupError: no order 7"
    assert await FunctionTool.from_function(broken_async).run(
        ToolCall("c", "broken_async", "{}")) == "error: RuntimeError: database down"


def test_outputs_are_text() -> None:
    assert render_output("as is") == "as is"
    assert render_output({"a": [1, date(2026, 1, 2)]}) == '{"a": [1, "2026-01-02"]}'
    assert render_output(None) == "null"
    assert render_output(object()).startswith("<object object")
    assert render_output("x" * 200_000).endswith("… [cut: 200000 characters]")


def test_check_tools_accepts_every_shape() -> None:
    flat = {"name": "a", "description": "A.", "parameters": {"type": "object",
                                                             "properties": {}}}
    nested = {"type": "function", "function": {"name": "b", "strict": True}}
    tools = check_tools([flat, nested, order_status, Tool("c")])
    assert [t.name for t in tools] == ["a", "b", "order_status", "c"]
    assert tools[0] == Tool("a", "A.", {"type": "object", "properties": {}})
    assert tools[1].parameters == {"type": "object", "properties": {}}
    assert check_tools(None) == ()


@pytest.mark.parametrize(("specs", "problem"), [
    ({"name": "a"}, "tools must be a list"),
    ([{"name": "has space"}], "tools.0.name must be 1 to 64"),
    ([{"name": "x" * 65}], "tools.0.name"),
    ([{"description": "nameless"}], "tools.0.name must be a string"),
    ([{"type": "code_interpreter"}], "tools.0.type: only function tools"),
    ([{"name": "a", "parameters": {"type": "string"}}], 'tools.0.parameters must be'),
    ([{"name": "a", "parameters": {"type": "object", "x": {1, 2}}}], "is not JSON"),
    ([{"name": "a", "color": "red"}], "tools.0: unknown field 'color'"),
    ([{"name": "a"}, {"name": "a"}], "two tools have the same name"),
    ([{"name": "a", "description": "\x00"}], "tools.0.description contains a NUL"),
    ([42], "tools.0 must be a tool definition or a function"),
    ([{"name": f"t{i}"} for i in range(MAX_TOOLS + 1)], f"the limit is {MAX_TOOLS}"),
])
def test_check_tools_names_what_it_refuses(specs: Any, problem: str) -> None:
    with pytest.raises(InvalidInput, match=None) as refused:
        check_tools(specs)
    assert problem in str(refused.value)


def test_tool_options_merge_and_render_as_a_request() -> None:
    lookup, other = Tool("lookup"), Tool("other")
    chat = ToolOptions((lookup,), choice="auto")
    assert chat.merged(None) is chat
    assert chat.merged(ToolOptions(parallel=False)) == ToolOptions((lookup,), "auto", False)
    assert chat.merged(ToolOptions((other,), "required")) == ToolOptions((other,), "required")
    assert ToolOptions().as_request() == {}
    assert not ToolOptions().offered
    assert not ToolOptions((lookup,), "none").offered
    assert ToolOptions((lookup,), "lookup", parallel=True).as_request() == {
        "tools": [{"type": "function", "function": {
            "name": "lookup", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": True,
    }


def test_messages_render_in_openais_chat_shape() -> None:
    call = ToolCall("call_1", "lookup", '{"q": 1}')
    assert Message("c", 1, Role.USER, "hi").as_openai() == {"role": "user", "content": "hi"}
    assert Message("c", 2, Role.ASSISTANT, "", tool_calls=(call,)).as_openai() == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": 1}'}}]}
    assert Message("c", 2, Role.ASSISTANT, "Let me look.",
                   tool_calls=(call,)).as_openai()["content"] == "Let me look."
    assert Message("c", 3, Role.TOOL, "found", tool_call_id="call_1").as_openai() == {
        "role": "tool", "content": "found", "tool_call_id": "call_1"}
    assert ToolCall.from_openai(call.as_openai()) == call
    assert ToolCall.from_openai({"id": "x", "name": "n", "arguments": {"a": 1}}) == ToolCall(
        "x", "n", '{"a": 1}')
