"""Function calling: the tools a model is offered and the calls it makes, as stored and as
OpenAI's chat shape sends them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: What OpenAI accepts as a function name; other providers are no looser.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's request to run one function. ``arguments`` is the JSON text exactly as
    the model wrote it: kept verbatim (it may not even parse) so history replays as sent."""

    id: str
    name: str
    arguments: str = "{}"

    def as_openai(self) -> dict[str, Any]:
        """The entry of an assistant message's ``tool_calls`` in OpenAI's chat shape."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_openai(cls, data: Mapping[str, Any]) -> ToolCall:
        """Read ``{"id", "type": "function", "function": {"name", "arguments"}}`` or the
        flat ``{"id", "name", "arguments"}`` this package stores and exports. A missing
        id is left empty for the caller to fill in."""
        inner = data.get("function", data)
        arguments = inner.get("arguments", "{}")
        if not isinstance(arguments, str):  # some clients send the object itself
            arguments = json.dumps(arguments, ensure_ascii=False)
        return cls(id=str(data.get("id") or ""), name=str(inner["name"]), arguments=arguments)


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: its name, what it is for, and a JSON schema of its
    arguments (an object schema). Build one from a Python function with
    :func:`chatsessions.engine.tools.tool_from_function`."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}})

    def as_openai(self) -> dict[str, Any]:
        """The entry of a chat completion request's ``tools``."""
        function: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    def to_dict(self) -> dict[str, Any]:
        """The flat form stored in ``chats.tools`` and exports."""
        return {"name": self.name, "description": self.description,
                "parameters": dict(self.parameters)}


@dataclass(frozen=True, slots=True)
class ToolOptions:
    """What a model call offers the model: the tools, whether it must, may or must not
    call one (``choice``: ``auto``, ``none``, ``required`` or a tool's name), and whether
    it may call several at once. None leaves the provider's default."""

    tools: tuple[Tool, ...] = ()
    choice: str | None = None
    parallel: bool | None = None

    @property
    def offered(self) -> bool:
        """Whether the model may call a tool at all."""
        return bool(self.tools) and self.choice != "none"

    def merged(self, override: ToolOptions | None) -> ToolOptions:
        """Per-call values win over per-chat ones; per-call tools replace the chat's."""
        if override is None:
            return self
        return ToolOptions(
            tools=override.tools or self.tools,
            choice=override.choice if override.choice is not None else self.choice,
            parallel=override.parallel if override.parallel is not None else self.parallel,
        )

    def as_request(self) -> dict[str, Any]:
        """The fields of an OpenAI chat completion request; nothing when no tools."""
        if not self.tools:
            return {}
        request: dict[str, Any] = {"tools": [tool.as_openai() for tool in self.tools]}
        if self.choice in ("auto", "none", "required"):
            request["tool_choice"] = self.choice
        elif self.choice is not None:
            request["tool_choice"] = {"type": "function", "function": {"name": self.choice}}
        if self.parallel is not None:
            request["parallel_tool_calls"] = self.parallel
        return request
