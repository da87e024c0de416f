"""Forks, regenerates, retries and edits: a chat taken again from one of its messages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from chatsessions.service.schemas.chats import ChatPublic
from chatsessions.service.schemas.fields import Content
from chatsessions.service.schemas.messages import MessagePublic
from chatsessions.types import GenerationParams


class ForkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    up_to_seq: int | None = Field(
        default=None, ge=0, description="copy the ok messages up to this seq (default: all)")


class TurnAgain(BaseModel):
    """A regenerate or a retry: the question is already in the chat."""

    model_config = ConfigDict(extra="forbid")

    params: GenerationParams | None = Field(
        default=None, description="overrides the chat's params for this call")
    stream: bool = Field(default=False, description="answer with Server-Sent Events")


class MessageEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Content = Field(description="the new text of the user message (not blank)")
    params: GenerationParams | None = Field(
        default=None, description="overrides the chat's params for this turn")


class EditPublic(BaseModel):
    """An edit's outcome: the fork made just before the edited message, and its answer."""

    chat: ChatPublic
    answer: MessagePublic
