"""Import and export documents: an exported chat, and the shapes ``POST /chats/import``
takes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StringConstraints

from chatsessions.service.schemas.fields import (
    CONTENT_PATTERN,
    TEXT_PATTERN,
    Content,
    ContextPolicyName,
    Label,
    Metadata,
    Text,
)
from chatsessions.types import GenerationParams

# POST /chats/import publishes these shapes; chatsessions.engine.importing checks the document
# itself (and names the offending field), so they only document what it accepts.
Status = Literal["ok", "pending", "failed", "replaced"]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
#: The store takes 64-bit totals; the schema says 2**53 - 1, the largest a JSON number
#: holds exactly (2**63 - 1 reads back as 2**63, which is refused).
Total = Annotated[int, Field(ge=0, le=2**53 - 1)]


class ExportedMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=1, le=2**31 - 1, description="unique in the document")
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=1_000_000, pattern=TEXT_PATTERN)]
    status: Status = "ok"
    error: Annotated[str, StringConstraints(max_length=10_000, pattern=TEXT_PATTERN)] | None = None
    model: Label | None = Field(default=None, max_length=200)
    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    latency_ms: Count | None = None
    created_at: datetime | None = None
    context_messages: Count | None = None
    context_tokens: Count | None = None
    covers_seq: Count | None = None
    replaces_seq: Count | None = None


class ExportedChat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Label | None = Field(default=None, max_length=64, description="kept with keep_id")
    system_prompt: Text
    title: Label | None = None
    backend: Label | None = Field(default=None, max_length=100,
                                  description="an installed backend's name")
    model: Label | None = Field(default=None, max_length=200)
    params: GenerationParams = Field(default_factory=GenerationParams)
    metadata: Metadata = Field(default_factory=dict)
    parent_id: Label | None = Field(default=None, max_length=64)
    forked_at_seq: Count | None = Field(default=None, description="at most message_count")
    message_count: Count | None = Field(
        default=None, description="at least the highest message seq (its default)")
    prompt_tokens: Total | None = None
    completion_tokens: Total | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    archived_at: datetime | None = None
    expires_at: datetime | None = None
    context_policy: ContextPolicyName = "trim"


class ExportDocument(BaseModel):
    """What ``GET /chats/{id}/export`` gives (version 1 exports are read too)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["chatsessions.chat.v2", "chatsessions.chat.v1"]
    chat: ExportedChat
    messages: list[ExportedMessage] = Field(default_factory=list, max_length=100_000)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: Content


class SystemPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system"]
    content: Text | Annotated[list[TextPart], Field(min_length=1)]


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=1_000_000, pattern=CONTENT_PATTERN)] | (
        Annotated[list[TextPart], Field(min_length=1)])


def _system_prompt_first(schema: dict[str, Any]) -> None:
    """Only the first message may be the system prompt: JSON Schema's prefixItems."""
    system_or_turn = schema["items"]
    schema["prefixItems"] = [system_or_turn]
    schema["items"] = system_or_turn["anyOf"][1]


OpenAIMessages = Annotated[
    list[SystemPrompt | Turn],
    Field(max_length=100_000, json_schema_extra=_system_prompt_first,
          description="a leading system message becomes the chat's system prompt; the rest "
          "are stored as answered history"),
]


class MessagesDocument(BaseModel):
    """``{"messages": [...]}``, as in a chat completion request, with an optional title."""

    model_config = ConfigDict(extra="forbid")

    messages: OpenAIMessages
    title: Label | None = None


def _as_one_of(schema: dict[str, Any]) -> None:
    """The three shapes exclude one another, so the schema may say exactly one matches."""
    schema["oneOf"] = schema.pop("anyOf")


#: The body of ``POST /chats/import``, passed on as it came: the import checks it.
ImportBody = Annotated[
    Any,
    PlainValidator(lambda document: document,
                   json_schema_input_type=ExportDocument | MessagesDocument | OpenAIMessages),
    Field(json_schema_extra=_as_one_of),
]
