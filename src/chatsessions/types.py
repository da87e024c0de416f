"""The core contract: what a chat, a message and a turn's usage look like."""

from __future__ import annotations

import builtins
import enum
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    #: a tool's output, answering one of the previous assistant message's tool calls
    TOOL = "tool"


class TurnStatus(enum.StrEnum):
    """A message's status: only ``ok`` messages are ever shown to the model."""

    OK = "ok"
    PENDING = "pending"
    FAILED = "failed"
    #: an answer kept as an alternative after it was regenerated
    REPLACED = "replaced"


class ContextPolicy(enum.StrEnum):
    """What to do when a chat outgrows the model's context window."""

    #: drop the oldest whole turns
    TRIM = "trim"
    #: replace the turns trimming would drop with a model-written summary
    SUMMARIZE = "summarize"
    #: send everything; a chat too long for the window is refused
    NONE = "none"


def utcnow() -> datetime:
    return datetime.now(UTC)


class GenerationParams(BaseModel):
    """Per-chat generation options; unknown keys are refused, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    stop: list[str] | None = Field(default=None, max_length=4)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)

    def merged(self, override: GenerationParams | None) -> GenerationParams:
        """Per-call values win over per-chat ones."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


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


@dataclass(frozen=True, slots=True)
class TextPart:
    """Text inside a message whose content is a list of parts."""

    text: str

    def as_openai(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image inside a message: an ``https``/``http`` URL or a ``data:image/...;base64``
    URL, and OpenAI's ``detail`` (``auto``, ``low``, ``high``; None: the provider's)."""

    url: str
    detail: str | None = None

    def as_openai(self) -> dict[str, Any]:
        image: dict[str, Any] = {"url": self.url}
        if self.detail is not None:
            image["detail"] = self.detail
        return {"type": "image_url", "image_url": image}


ContentPart = TextPart | ImagePart


def parts_text(parts: Sequence[ContentPart]) -> str:
    """What a message's text is when its content is parts: its text parts, one per line.
    Search, titles and token counts read this."""
    return "\n".join(part.text for part in parts if isinstance(part, TextPart))


def parts_json(parts: Sequence[ContentPart]) -> list[dict[str, Any]]:
    """Parts in OpenAI's chat shape, which is also how they are stored and exported."""
    return [part.as_openai() for part in parts]


def parts_of_json(data: Sequence[Mapping[str, Any]]) -> tuple[ContentPart, ...]:
    """The inverse of :func:`parts_json`, for data this package wrote (unchecked)."""
    parts: list[ContentPart] = []
    for item in data:
        if item["type"] == "text":
            parts.append(TextPart(item["text"]))
        else:
            image = item["image_url"]
            parts.append(ImagePart(image["url"], image.get("detail")))
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer of the model, as a backend returns it (nothing stored): its text, the
    tokens it took, the model that wrote it, and why it stopped (``stop``, ``length``...)."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    #: the functions the model asked to run (``finish_reason`` "tool_calls"), in order
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call as it streams in, for a client to watch it being written.
    ``index`` tells the calls of one answer apart; ``id`` and ``name`` come with a call's
    first piece, each piece after that adds to its ``arguments`` JSON text. The final
    ``Completion`` holds every call whole."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


#: A streamed model call yields text deltas and tool-call pieces, then exactly one final
#: ``Completion``.
StreamItem = str | ToolCallDelta | Completion


@dataclass(frozen=True, slots=True)
class Chat:
    id: str
    system_prompt: str
    tenant_id: str = "default"
    title: str | None = None
    backend: str = "local"
    model: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    forked_at_seq: int | None = None
    message_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    archived_at: datetime | None = None
    expires_at: datetime | None = None
    context_policy: ContextPolicy = ContextPolicy.TRIM
    #: the functions offered to the model on every turn of this chat
    tools: tuple[Tool, ...] = ()
    #: whether the model must (``required``), may (``auto``) or must not (``none``) call
    #: one of them, or the name of the one it must call; None: the provider's default
    tool_choice: str | None = None
    #: bumped by every change to what a turn sends other than an append (a message
    #: deleted, a new system prompt...), so each replica knows when its cached history is
    #: stale. A new chat starts at a random value: one deleted and imported again under its
    #: id is not taken for the one cached. Not in ``to_dict``: it means nothing elsewhere.
    history_version: int = field(default_factory=lambda: secrets.randbelow(2**31),
                                 compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The chat as JSON-ready data, without its history version."""
        doc = asdict(self)
        del doc["history_version"]
        return _jsonable(doc)


@dataclass(frozen=True, slots=True)
class Message:
    """One stored message; ``seq`` orders a chat's messages (the system prompt is seq 0)."""

    chat_id: str
    seq: int
    role: Role
    content: str
    status: TurnStatus = TurnStatus.OK
    error: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int | None = None
    created_at: datetime = field(default_factory=utcnow)
    idempotency_key: str | None = None
    #: on answers: how many earlier messages (system prompt and summary included) and
    #: how many tokens the model was shown
    context_messages: int | None = None
    context_tokens: int | None = None
    #: on summaries (role system): the last seq the summary stands for
    covers_seq: int | None = None
    #: on regenerated answers: the seq of the answer this one replaced
    replaces_seq: int | None = None
    #: on answers (role assistant): the functions the model asked to run, if any
    tool_calls: tuple[ToolCall, ...] | None = None
    #: on tool outputs (role tool): the id of the call this output answers
    tool_call_id: str | None = None
    #: the content as parts, when it holds more than text (images); ``content`` is then
    #: its text (:func:`parts_text`)
    parts: tuple[ContentPart, ...] | None = None
    #: on answers asked for in a response format: the answer read back (a pydantic
    #: model's instance, or the JSON value); not stored
    parsed: Any = field(default=None, compare=False, repr=False)

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)

    def as_openai(self) -> dict[str, Any]:
        """The ``{"role", "content"}`` dict the tutorial kept in its history list; with
        tools, OpenAI's chat shape: an answer's ``tool_calls`` (its content None when it
        has no text) and a tool output's ``tool_call_id``; with images, the content as
        OpenAI's list of parts."""
        # ``_value_`` is the plain attribute behind ``.value`` (an enum property, twice
        # as slow): this runs for every message of every context.
        if self.tool_calls is None and self.tool_call_id is None and self.parts is None:
            return {"role": self.role._value_, "content": self.content}
        shown: dict[str, Any] = {"role": self.role._value_, "content": self.content}
        if self.parts is not None:
            shown["content"] = parts_json(self.parts)
        if self.tool_calls and self.parts is None:
            shown["content"] = self.content or None
        if self.tool_calls:
            shown["tool_calls"] = [call.as_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            shown["tool_call_id"] = self.tool_call_id
        return shown

    def to_dict(self) -> dict[str, Any]:
        shown = _jsonable(asdict(replace(self, parsed=None)))
        del shown["parsed"]
        shown["parts"] = None if self.parts is None else parts_json(self.parts)
        return shown


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, enum.Enum):
            out[key] = value.value
        elif isinstance(value, tuple):  # tool calls, tools: asdict made them dicts
            out[key] = list(value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A tenant's API key as stored: only the SHA-256 of the secret, never the secret."""

    id: str
    tenant_id: str
    key_hash: str
    name: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model's share of a tenant's usage over a time range. The tokens are those of
    its answers and of the summaries it wrote (model calls too, paid for alike)."""

    model: str
    turns: int
    prompt_tokens: int
    completion_tokens: int
    cost: float = 0.0
    #: False when the price table has no entry for this model (its cost counts as 0).
    priced: bool = False
    #: Summaries written under the ``summarize`` context policy (not turns).
    summaries: int = 0


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Answered turns, tokens and cost per model, over ``[start, end)`` (open ends: all)."""

    start: datetime | None
    end: datetime | None
    models: list[ModelUsage]

    @property
    def turns(self) -> int:
        return sum(m.turns for m in self.models)

    @property
    def summaries(self) -> int:
        return sum(m.summaries for m in self.models)

    @property
    def prompt_tokens(self) -> int:
        return sum(m.prompt_tokens for m in self.models)

    @property
    def completion_tokens(self) -> int:
        return sum(m.completion_tokens for m in self.models)

    @property
    def cost(self) -> float:
        return sum(m.cost for m in self.models)

    @property
    def unpriced(self) -> list[str]:
        """Models used without a price: their cost is missing from the total."""
        return [m.model for m in self.models if not m.priced]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A message matching a search: where it is and the matching words in context."""

    chat_id: str
    seq: int
    role: Role
    snippet: str
    created_at: datetime


class RunStatus(enum.StrEnum):
    """Where a turn run in the background stands (the names OpenAI's Responses use)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Run:
    """A turn run in the background, as stored: any replica can read where it stands.

    ``owner`` is the process running it, which renews ``expires_at`` while it works: a
    run still unfinished after that is one whose process died, and counts as failed.
    ``seq`` is the answer's seq once the turn has the chat (None while queued).
    """

    id: str
    tenant_id: str
    chat_id: str
    status: RunStatus = RunStatus.QUEUED
    seq: int | None = None
    error: str | None = None
    owner: str | None = None
    cancel_requested: bool = False
    #: what the caller wants kept with the run (the OpenAI layer: the request's echo)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
