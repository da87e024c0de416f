"""Response formats: the shape an answer must take, and how a pydantic model class becomes
one."""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from chatsessions.types.tools import TOOL_NAME

#: What OpenAI accepts as a response format's name.
FORMAT_NAME = TOOL_NAME


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """The shape an answer must take: ``text`` (the default), ``json_object`` (any JSON
    object) or ``json_schema`` (a JSON object valid for ``schema``). ``name``,
    ``description`` and ``strict`` travel with a schema as OpenAI defines them. Check one
    built by hand with :func:`chatsessions.engine.structured.check_response_format`;
    :meth:`from_model` builds it from a pydantic model class."""

    type: str = "text"
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None

    @property
    def structured(self) -> bool:
        """Whether the answer must be JSON (``json_object`` or ``json_schema``)."""
        return self.type != "text"

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any], *, name: str = "response",
                    strict: bool | None = None,
                    description: str | None = None) -> ResponseFormat:
        return cls("json_schema", name, schema, strict, description)

    @classmethod
    def json_object(cls) -> ResponseFormat:
        return cls("json_object")

    @classmethod
    def from_model(cls, model: builtins.type[BaseModel], *, name: str | None = None,
                   strict: bool | None = None) -> ResponseFormat:
        """The format of ``model``'s JSON schema (pydantic's ``model_json_schema``),
        named after the class; its docstring, if any, is the description. ``strict``
        closes every object (``additionalProperties: false``, every property required),
        as OpenAI's strict mode demands; a field with a default then must be sent too."""
        schema = model.model_json_schema()
        description = schema.pop("description", None)
        schema.pop("title", None)
        if strict:
            schema = _closed(schema)
        return cls.json_schema(schema, name=name or _format_name(model.__name__),
                               strict=strict, description=description)

    def as_openai(self) -> dict[str, Any]:
        """The ``response_format`` of a chat completion request."""
        if self.type != "json_schema":
            return {"type": self.type}
        inner: dict[str, Any] = {"name": self.name or "response",
                                 "schema": dict(self.schema or {})}
        if self.description:
            inner["description"] = self.description
        if self.strict is not None:
            inner["strict"] = self.strict
        return {"type": "json_schema", "json_schema": inner}

    def as_responses(self) -> dict[str, Any]:
        """The ``text.format`` of a Responses API request: the same fields, flat."""
        shown = self.as_openai()
        return {"type": self.type, **shown.get("json_schema", {})}


def _closed(schema: Any) -> Any:
    """``schema`` with every object schema in it closed, for strict mode."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if schema.get("type") == "object" and "properties" in schema:
        closed["additionalProperties"] = False
        closed["required"] = list(schema["properties"])
    return closed


def _format_name(name: str) -> str:
    """A class name as a format name: characters OpenAI refuses become ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
    return cleaned or "response"
