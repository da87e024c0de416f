"""How :class:`chatsessions.testing.FakeLLMServer` answers a request for structured output.

Deterministic, so a test can predict the answer:

- ``response_format`` ``{"type": "json_object"}``: ``{"reply": <the text answer>}``.
- ``{"type": "json_schema", "json_schema": {"name", "schema"}}``: a JSON object valid for
  the schema, built from it: each string takes the next word of the last user message
  (digits and punctuation left out; ``"text"`` when it has none), each integer or number
  the next run of digits in it (0 when it has none), each cycling; booleans are
  ``false``, null is ``null``, an ``enum`` or ``const`` gives its first value, an array
  holds one item (``minItems`` if more; only those nested three arrays or objects
  deep), an object every property it lists, in order;
  ``anyOf``/``oneOf`` take their first option that is not null, local ``$ref``s are
  followed. Lengths and bounds (``minLength``, ``maxLength``, ``minimum``, ``maximum``)
  are kept; the ``date-time``, ``date``, ``time``, ``email``, ``uri`` and ``uuid``
  formats get fixed valid values. ``pattern`` is not honoured.
- A malformed ``response_format`` is a 400, as OpenAI answers it.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

from chatsessions._fake_tools import text_of

_WORD = re.compile(r"[^\W\d_]+")
_DIGITS = re.compile(r"\d+")
#: Nesting followed before a recursive schema is cut short.
MAX_DEPTH = 8
#: Nesting below which an array holds one item even when it may be empty.
SHALLOW = 3
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "00:00:00Z",
    "email": "someone@example.com", "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def format_problem(response_format: Any) -> str | None:
    """What is wrong with a request's ``response_format``, as OpenAI would say it; None
    when it is absent or well-formed."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        return "Invalid type for 'response_format': expected an object."
    kind = response_format.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        return ("Invalid value for 'response_format.type': expected one of 'text', "
                "'json_object' or 'json_schema'.")
    if kind != "json_schema":
        return None
    inner = response_format.get("json_schema")
    if not isinstance(inner, dict) or not isinstance(inner.get("name"), str):
        return "Missing required parameter: 'response_format.json_schema.name'."
    if not isinstance(inner.get("schema", {}), dict):
        return "Invalid type for 'response_format.json_schema.schema': expected an object."
    return None


def formatted_answer(messages: list[dict[str, Any]], response_format: Any,
                     text_answer: str) -> str | None:
    """The JSON text answering a request for ``response_format`` (already checked); None
    for a plain text answer."""
    if not isinstance(response_format, dict) or response_format.get("type") == "text":
        return None
    if response_format["type"] == "json_object":
        return json.dumps({"reply": text_answer}, ensure_ascii=False)
    schema = response_format["json_schema"].get("schema") or {"type": "object"}
    said = next((text_of(m.get("content")) for m in reversed(messages)
                 if m.get("role") == "user"), "")
    builder = _Builder(schema, _WORD.findall(said), [int(d) for d in _DIGITS.findall(said)])
    return json.dumps(builder.value(schema, 0), ensure_ascii=False)


class _Builder:
    def __init__(self, root: dict[str, Any], words: list[str], numbers: list[int]) -> None:
        self.root = root
        self.words: Iterator[str] = itertools.cycle(words or ["text"])
        self.numbers: Iterator[int] = itertools.cycle(numbers or [0])

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#") \
                and seen < MAX_DEPTH:
            target: Any = self.root
            for step in schema["$ref"][1:].split("/")[1:]:
                target = target[step.replace("~1", "/").replace("~0", "~")]
            schema, seen = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}, \
                seen + 1
        return schema

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict):
            return None
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf", "allOf"):
            options = [o for o in schema.get(key) or () if isinstance(o, dict)]
            if options:
                chosen = next((o for o in options if self.resolve(o).get("type") != "null"),
                              options[0])
                return self.value(chosen, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        if kind == "object":
            if depth >= MAX_DEPTH:
                return {}
            properties = schema.get("properties") or {}
            return {name: self.value(sub, depth + 1) for name, sub in properties.items()}
        if kind == "array":
            least = int(schema.get("minItems", 0))
            # Deeper down, only the items required: a recursive schema (a person's
            # friends are persons) ends.
            count = max(1, least) if depth < SHALLOW else least
            count = min(count, int(schema.get("maxItems", count)))
            prefix = schema.get("prefixItems") or []
            items = [self.value(prefix[i] if i < len(prefix) else schema.get("items", {}),
                                depth + 1) for i in range(count)]
            return items
        if kind in ("integer", "number"):
            number = next(self.numbers)
            if "minimum" in schema:
                number = max(number, int(schema["minimum"]))
            if "maximum" in schema:
                number = min(number, int(schema["maximum"]))
            return number
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        return self.string(schema)

    def string(self, schema: dict[str, Any]) -> str:
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        text = next(self.words)
        low = int(schema.get("minLength", 0))
        while len(text) < low:
            text += text
        return text[: int(schema.get("maxLength", len(text)))]
