"""Request and response models, one family per resource (Create / Update / Public)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chatsessions.types import Chat, GenerationParams, Message

LABEL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00]*$"
CONTENT_PATTERN = r"^[^\x00]*\S[^\x00]*$"
KEY_PATTERN = r"^[^\x00]+$"
#: What a pattern mismatch means, for error messages people can act on.
PATTERN_HINTS = {
    LABEL_PATTERN: "must be one line without control characters",
    TEXT_PATTERN: "must not contain a NUL character",
    CONTENT_PATTERN: "is empty or contains a NUL character",
    KEY_PATTERN: "must not contain a NUL character",
}

#: One line of text: no control characters.
Label = Annotated[str, StringConstraints(max_length=500, pattern=LABEL_PATTERN)]
#: Free text: anything but NUL, up to the default message limit.
Text = Annotated[str, StringConstraints(max_length=32_000, pattern=TEXT_PATTERN)]
#: A message must say something.
Content = Annotated[str, StringConstraints(max_length=32_000, pattern=CONTENT_PATTERN)]
MetadataValue = (
    Annotated[str, StringConstraints(max_length=512, pattern=r"^[^\x00]*$")]
    | int | float | bool | None
)
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                               pattern=KEY_PATTERN)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(max_length=32, description="up to 32 keys with scalar values, for filtering",
          # pydantic states key patterns as patternProperties, which lets other keys
          # through; propertyNames says what we actually enforce.
          json_schema_extra={"propertyNames": {"minLength": 1, "maxLength": 64,
                                               "pattern": "^[^\\x00]+$"},
                             "additionalProperties": False}),
]


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. not_found, invalid_request")
    message: str = Field(description="what went wrong, for humans")


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail


class ChatCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system_prompt: Text | None = Field(
        default=None, description="defaults to the service's system prompt")
    model: Label | None = Field(default=None, max_length=200)
    params: GenerationParams | None = None
    title: Label | None = None
    metadata: Metadata | None = None


class ChatUpdate(BaseModel):
    """Only the fields present are changed; ``title: null`` clears the title."""

    model_config = ConfigDict(extra="forbid")

    title: Label | None = None
    # Absent means "unchanged"; these cannot be set to null, so the schema says string.
    system_prompt: Text = None  # type: ignore[assignment]
    model: Label = Field(default=None, max_length=200)  # type: ignore[assignment]
    params: GenerationParams = None  # type: ignore[assignment]
    metadata: Metadata = None  # type: ignore[assignment]


class ChatPublic(BaseModel):
    id: str
    title: str | None
    system_prompt: str
    backend: str
    model: str
    params: dict[str, Any]
    metadata: dict[str, Any]
    parent_id: str | None
    message_count: int
    prompt_tokens: int
    completion_tokens: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, chat: Chat) -> ChatPublic:
        return cls(
            id=chat.id, title=chat.title, system_prompt=chat.system_prompt,
            backend=chat.backend, model=chat.model, params=chat.params,
            metadata=chat.metadata, parent_id=chat.parent_id,
            message_count=chat.message_count, prompt_tokens=chat.prompt_tokens,
            completion_tokens=chat.completion_tokens, created_at=chat.created_at,
            updated_at=chat.updated_at,
        )


class ChatList(BaseModel):
    data: list[ChatPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Content = Field(description="the user's message (not blank)")
    params: GenerationParams | None = Field(
        default=None, description="overrides the chat's params for this turn")
    stream: bool = Field(default=False, description="answer with Server-Sent Events")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MessagePublic(BaseModel):
    chat_id: str
    seq: int
    role: Literal["system", "user", "assistant"]
    content: str
    status: Literal["ok", "pending", "failed"]
    error: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    usage: Usage
    latency_ms: int | None
    created_at: datetime

    @classmethod
    def of(cls, message: Message) -> MessagePublic:
        return cls(
            chat_id=message.chat_id, seq=message.seq, role=message.role.value,
            content=message.content, status=message.status.value, error=message.error,
            model=message.model, prompt_tokens=message.prompt_tokens,
            completion_tokens=message.completion_tokens,
            usage=Usage(prompt_tokens=message.prompt_tokens,
                        completion_tokens=message.completion_tokens,
                        total_tokens=message.prompt_tokens + message.completion_tokens),
            latency_ms=message.latency_ms, created_at=message.created_at,
        )


class MessageList(BaseModel):
    data: list[MessagePublic]
    next_after: int | None = Field(description="pass as ?after= for the next page")


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
