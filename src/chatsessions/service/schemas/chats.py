"""Chats: created, changed, shown and listed."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatsessions.service.schemas.fields import (
    CONTEXT_POLICY_HELP,
    ContextPolicyName,
    Label,
    Metadata,
    Text,
)
from chatsessions.service.schemas.tools import TOOL_CHOICE_HELP, ToolChoice, ToolDefinition, Tools
from chatsessions.types import Chat, GenerationParams


class ChatCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system_prompt: Text | None = Field(
        default=None, description="defaults to the service's system prompt")
    model: Label | None = Field(default=None, max_length=200)
    params: GenerationParams | None = None
    title: Label | None = None
    metadata: Metadata | None = None
    expires_at: datetime | None = Field(
        default=None, description="when the chat and its messages are deleted for good")
    context_policy: ContextPolicyName = Field(
        default="trim", description=CONTEXT_POLICY_HELP)
    tools: Tools | None = Field(default=None, description="functions offered to the model "
                                                          "on every turn")
    tool_choice: ToolChoice | None = Field(default=None, description=TOOL_CHOICE_HELP
                                           + " (a message's own tool_choice wins)")


class ChatUpdate(BaseModel):
    """Only the fields present are changed; ``title: null`` clears the title and
    ``expires_at: null`` the expiry."""

    model_config = ConfigDict(extra="forbid")

    title: Label | None = None
    expires_at: datetime | None = None
    # Absent means "unchanged"; these cannot be set to null, so the schema says string.
    system_prompt: Text = None  # type: ignore[assignment]
    model: Label = Field(default=None, max_length=200)  # type: ignore[assignment]
    params: GenerationParams = None  # type: ignore[assignment]
    metadata: Metadata = None  # type: ignore[assignment]
    context_policy: ContextPolicyName = Field(
        default=None, description=CONTEXT_POLICY_HELP)  # type: ignore[arg-type]
    tools: Tools | None = Field(default=None, description="null or [] removes them")
    tool_choice: ToolChoice | None = Field(default=None, description=TOOL_CHOICE_HELP
                                           + "; null clears it")


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
    archived_at: datetime | None = Field(description="set while the chat is archived")
    expires_at: datetime | None = Field(description="when the chat will be deleted")
    forked_at_seq: int | None = Field(description="the parent's last seq copied into a fork")
    context_policy: Literal["trim", "summarize", "none"] = Field(
        description="what happens when the chat outgrows the model's context window")
    tools: list[ToolDefinition] = Field(default_factory=list,
                                        description="functions offered on every turn")
    tool_choice: str | None = Field(default=None, description=TOOL_CHOICE_HELP
                                    + "; null: the model's default")

    @classmethod
    def of(cls, chat: Chat) -> ChatPublic:
        return cls(
            id=chat.id, title=chat.title, system_prompt=chat.system_prompt,
            backend=chat.backend, model=chat.model, params=chat.params,
            metadata=chat.metadata, parent_id=chat.parent_id,
            message_count=chat.message_count, prompt_tokens=chat.prompt_tokens,
            completion_tokens=chat.completion_tokens, created_at=chat.created_at,
            updated_at=chat.updated_at, archived_at=chat.archived_at,
            expires_at=chat.expires_at, forked_at_seq=chat.forked_at_seq,
            context_policy=chat.context_policy.value,
            tools=[ToolDefinition.of(tool) for tool in chat.tools],
            tool_choice=chat.tool_choice,
        )


class ChatList(BaseModel):
    data: list[ChatPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")
