"""How :class:`chatsessions.testing.FakeLLMServer` plays a model that calls tools.

Deterministic, so a test can predict every call and answer:

- **Calling.** The request offers ``tools`` (and ``tool_choice`` is not ``"none"``) and
  its last message is a user message: the fake calls the tool ``tool_choice`` names, else
  the first one. Its arguments follow the tool's JSON schema, for the ``required``
  properties (all properties when the schema lists none): a string gets the first run of
  digits in the user message (an order number, say), or the whole message,
  whitespace-collapsed, when it has none; an integer or number that run as a number (0
  without one); a boolean ``true``; an ``enum`` its first value; an array ``[]``; an
  object ``{}``. When the first such property takes a string or integer, the message has
  several digit runs and ``parallel_tool_calls`` is not false, it calls the tool once per
  run (up to 8), in order. Call ids are ``call_<h>_<n>`` with ``h`` the history's digest,
  so they differ from turn to turn.
- **Answering from outputs.** The last message is a tool output: the answer quotes every
  output since the last assistant message, with the name of the call it answers:
  ``Tool results: order_status -> "4417: shipped"; ... [h]``.
- Anything else is answered as without tools (:meth:`FakeLLMServer.answer_for`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_DIGITS = re.compile(r"\d+")
MAX_PARALLEL = 8
#: Characters of a call's arguments per streamed chunk.
ARGUMENT_PIECE = 8


def digest(messages: list[dict[str, Any]]) -> str:
    """The history's digest: 8 hex digits of the SHA-256 of its ``[role, content]`` pairs
    as compact JSON (content as text: list parts joined, None empty)."""
    pairs = [[str(m.get("role", "")), text_of(m.get("content"))] for m in messages]
    dumped = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(dumped.encode()).hexdigest()[:8]


def text_of(content: Any) -> str:
    """Message content as plain text; list-of-parts content keeps only its text parts."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else "" if content is None else str(content)


def tool_calls_for(messages: list[dict[str, Any]], body: dict[str, Any]
                   ) -> list[dict[str, Any]] | None:
    """The calls the fake makes for this request (OpenAI's ``tool_calls`` shape), or None
    when it answers in text."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if not tools or choice == "none" or messages[-1].get("role") != "user":
        return None
    tool = _chosen(tools, choice)
    function = tool.get("function", tool)
    schema = function.get("parameters") or {}
    said = " ".join(text_of(messages[-1].get("content")).split())
    runs = _DIGITS.findall(said)
    properties: dict[str, Any] = schema.get("properties") or {}
    names = [n for n in schema.get("required", list(properties)) if n in properties]
    h = digest(messages)
    first = properties[names[0]] if names else {}
    several = (len(runs) > 1 and body.get("parallel_tool_calls") is not False
               and first.get("type") in ("string", "integer"))
    picks = runs[:MAX_PARALLEL] if several else runs[:1]
    calls = []
    for n, run in enumerate(picks or [None]):
        arguments = {name: _value(properties[name], run, said) for name in names}
        calls.append({"id": f"call_{h}_{n}", "type": "function", "function": {
            "name": function.get("name", ""),
            "arguments": json.dumps(arguments, ensure_ascii=False)}})
    return calls


def _chosen(tools: list[dict[str, Any]], choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name") or choice.get("name")
        for tool in tools:
            if tool.get("function", tool).get("name") == wanted:
                return tool
    return tools[0]


def _value(schema: dict[str, Any], run: str | None, said: str) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first type that is not null
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return run if run is not None else said
    if kind in ("integer", "number"):
        return int(run) if run is not None else 0
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return run if run is not None else said


def answer_from_outputs(messages: list[dict[str, Any]]) -> str | None:
    """The answer quoting the outputs the last message ends, or None if it is no output."""
    if messages[-1].get("role") != "tool":
        return None
    outputs = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        outputs.append(message)
    names = {call.get("id"): (call.get("function") or {}).get("name", "?")
             for m in messages if m.get("role") == "assistant"
             for call in m.get("tool_calls") or () if isinstance(call, dict)}
    quoted = "; ".join(
        f"{names.get(m.get('tool_call_id'), '?')} -> "
        + json.dumps(text_of(m.get("content")), ensure_ascii=False)
        for m in reversed(outputs))
    return f"Tool results: {quoted} [{digest(messages)}]"


def call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls as OpenAI streams them: per call, a first delta with its index, id, type,
    name and empty arguments, then its arguments in pieces."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        function = call["function"]
        deltas.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                       "function": {"name": function["name"],
                                                    "arguments": ""}}]})
        arguments = function["arguments"]
        for start in range(0, len(arguments), ARGUMENT_PIECE):
            piece = arguments[start:start + ARGUMENT_PIECE]
            deltas.append({"tool_calls": [{"index": index,
                                           "function": {"arguments": piece}}]})
    return deltas
