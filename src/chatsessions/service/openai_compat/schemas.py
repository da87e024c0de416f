"""Request bodies of /v1 and the objects it answers with.

Request models list what this server understands. Parameters it may safely ignore are
listed in ``IGNORED``; any other parameter sent with a value is refused with a 400 naming
it, so a client never silently loses a feature it asked for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatsessions.service.openai_compat.errors import unsupported
from chatsessions.types import Chat, Usage

#: accepted and without effect here (routing hints, end-user ids, caching, service tiers)
IGNORED = frozenset({
    "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
    "service_tier", "parallel_tool_calls", "max_tool_calls", "store", "metadata",
    "stream_options", "truncation", "n",
})


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    def refuse_unknown(self) -> None:
        """400 for any parameter this server does not implement, sent with a value."""
        for name, value in (self.model_extra or {}).items():
            if name not in IGNORED and value not in (None, False, [], {}):
                raise unsupported(name)


class ConversationRef(BaseModel):
    id: str


class ConversationCreate(_Request):
    items: list[Any] | None = Field(default=None, max_length=20)
    metadata: dict[str, Any] | None = None


class ConversationUpdate(_Request):
    metadata: dict[str, Any]


class ItemsCreate(_Request):
    items: list[Any] = Field(max_length=20)


class ResponseCreate(_Request):
    model: str | None = Field(default=None, max_length=200)
    input: str | list[Any] | None = None
    instructions: str | None = None
    conversation: str | ConversationRef | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    stream: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    include: list[str] | None = None
    background: bool | None = None

    def refuse_unsupported(self) -> None:
        self.refuse_unknown()
        if self.tools:
            raise unsupported("tools", "Tools are not supported")
        if self.tool_choice not in (None, "auto", "none"):
            raise unsupported("tool_choice", "Tool choice is not supported")
        if self.include:
            raise unsupported("include", "Extra output ('include') is not supported")
        if self.background:
            raise unsupported("background", "Background responses are not supported")
        text_format = (self.text or {}).get("format")
        if text_format is not None and (
                not isinstance(text_format, dict) or text_format.get("type") != "text"):
            raise unsupported("text.format", "Structured output formats are not supported")

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation


class ChatCompletionCreate(_Request):
    model: str = Field(max_length=200)
    messages: list[Any] = Field(min_length=1)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n: int | None = None
    response_format: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def refuse_unsupported(self) -> None:
        self.refuse_unknown()
        if self.n not in (None, 1):
            raise unsupported("n", "Only one choice (n=1) is supported")
        if self.tool_choice not in (None, "none", "auto"):
            raise unsupported("tool_choice", "Tool choice is not supported")
        if self.response_format is not None and self.response_format.get("type") != "text":
            raise unsupported("response_format", "Structured output formats are not supported")


# answers --------------------------------------------------------------------------------

def conversation_object(chat: Chat) -> dict[str, Any]:
    return {"id": chat.id, "object": "conversation",
            "created_at": int(chat.created_at.timestamp()), "metadata": chat.metadata}


def response_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def response_object(
    *,
    id_: str,
    created_at: float,
    model: str,
    status: Literal["completed", "failed", "in_progress"],
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    request: ResponseCreate | None = None,
    conversation_id: str | None = None,
    previous_response_id: str | None = None,
    error: dict[str, Any] | None = None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """A Response object; ``request`` supplies the settings echoed back on creation."""
    request = request or ResponseCreate()
    return {
        "id": id_, "object": "response", "created_at": created_at, "status": status,
        "completed_at": completed_at, "background": False, "error": error,
        "incomplete_details": None, "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens, "model": model, "output": output,
        "parallel_tool_calls": False,
        "previous_response_id": previous_response_id or request.previous_response_id,
        "reasoning": None, "store": request.store is not False,
        "temperature": request.temperature, "top_p": request.top_p,
        "text": {"format": {"type": "text"}}, "tool_choice": "none", "tools": [],
        "truncation": "auto", "usage": None if usage is None else response_usage(usage),
        "user": None, "metadata": request.metadata or {},
        "conversation": {"id": conversation_id} if conversation_id else None,
    }
