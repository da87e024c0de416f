"""Request and response models, one family per resource (Create / Update / Public)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatsessions.types import Chat, GenerationParams, Message


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. not_found, invalid_request")
    message: str = Field(description="what went wrong, for humans")


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail


class ChatCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system_prompt: str | None = Field(
        default=None, description="defaults to the service's system prompt")
    model: str | None = Field(default=None, max_length=200)
    params: GenerationParams | None = None
    title: str | None = Field(default=None, max_length=500)
    metadata: dict[str, Any] | None = None


class ChatUpdate(BaseModel):
    """Only the fields present are changed; ``title: null`` clears the title."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=500)
    system_prompt: str | None = None
    model: str | None = Field(default=None, max_length=200)
    params: GenerationParams | None = None
    metadata: dict[str, Any] | None = None


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

    content: str = Field(description="the user's message (size limit: the service's setting)")
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
