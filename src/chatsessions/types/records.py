"""What the store keeps and hands back: chats, their messages and tenants' API keys, with
the JSON form a chat and a message export to."""

from __future__ import annotations

import enum
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from chatsessions.types.completions import Usage
from chatsessions.types.enums import ContextPolicy, Role, TurnStatus
from chatsessions.types.parts import ContentPart, parts_json
from chatsessions.types.tools import Tool, ToolCall


def utcnow() -> datetime:
    return datetime.now(UTC)


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
