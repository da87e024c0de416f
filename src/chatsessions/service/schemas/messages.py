"""Messages: a turn's request, and the stored messages that come back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from chatsessions.service.schemas.fields import CONTENT_PATTERN, Content
from chatsessions.service.schemas.tools import TOOL_CHOICE_HELP, ToolCallPublic, ToolChoice, Tools
from chatsessions.types import GenerationParams, Message


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Content | Annotated[list[dict[str, Any]], Field(min_length=1), WithJsonSchema({
        # Published as text parts only: image parts are accepted too, within limits on
        # their URLs and data a schema cannot state (see the description).
        "type": "array", "minItems": 1, "maxItems": 4,
        "items": {"type": "object", "required": ["type", "text"],
                  "additionalProperties": False,
                  "properties": {"type": {"const": "text"},
                                 "text": {"type": "string", "maxLength": 7_999,
                                          "pattern": CONTENT_PATTERN}}}})] = Field(
        description="the user's message (not blank): text, or a list of parts: text and "
                    "images by URL or base64 data URL, in OpenAI's chat shape (text, "
                    "image_url) or the Responses API's (input_text, input_image)")
    params: GenerationParams | None = Field(
        default=None, description="overrides the chat's params for this turn")
    stream: bool = Field(default=False, description="answer with Server-Sent Events")
    # Published as its simplest forms: a json_schema format is accepted too, but only when
    # its schema is a valid JSON schema, which the request's own schema cannot say.
    response_format: Annotated[dict[str, Any] | None, WithJsonSchema({
        "anyOf": [{"type": "object", "required": ["type"], "additionalProperties": False,
                   "properties": {"type": {"enum": ["text", "json_object"]}}},
                  {"type": "null"}],
        "description": "OpenAI's response_format (json_object, or json_schema in either "
                       "OpenAI shape): the answer is JSON of that shape, returned parsed as "
                       "`parsed`"})] = None
    context_policy: Literal["trim", "none", "summarize"] | None = Field(
        default=None, description="the chat's context policy for this turn only")
    tools: Tools | None = Field(default=None, description="replace the chat's tools for "
                                                          "this turn")
    tool_choice: ToolChoice | None = Field(default=None, description=TOOL_CHOICE_HELP)
    parallel_tool_calls: bool | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MessagePublic(BaseModel):
    chat_id: str
    seq: int
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    status: Literal["ok", "pending", "failed", "replaced"] = Field(
        description="only ok messages are shown to the model; replaced: an earlier answer "
                    "kept as an alternative after a regenerate")
    error: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    usage: Usage
    latency_ms: int | None
    created_at: datetime
    context_messages: int | None = Field(
        description="answers: earlier messages the model was shown (system prompt included)")
    context_tokens: int | None = Field(description="answers: tokens the model was shown")
    covers_seq: int | None = Field(
        description="summaries (role system): the last seq the summary stands for")
    replaces_seq: int | None = Field(
        description="regenerated answers: the seq of the answer this one replaced")
    tool_calls: list[ToolCallPublic] | None = Field(
        default=None, description="answers: the functions the model asked to run")
    tool_call_id: str | None = Field(
        default=None, description="tool outputs (role tool): the call this answers")
    parts: list[dict[str, Any]] | None = Field(
        default=None, description="the content as OpenAI's chat parts, when it holds "
                                  "images (`content` is then its text)")
    parsed: Any = Field(default=None, description="answers asked for in a response_format: "
                                                  "the answer's JSON value (not stored)")

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
            context_messages=message.context_messages,
            context_tokens=message.context_tokens, covers_seq=message.covers_seq,
            replaces_seq=message.replaces_seq,
            tool_calls=None if message.tool_calls is None
            else [ToolCallPublic.of(call) for call in message.tool_calls],
            tool_call_id=message.tool_call_id,
            parts=None if message.parts is None else [p.as_openai() for p in message.parts],
            parsed=message.parsed,
        )


class MessageList(BaseModel):
    data: list[MessagePublic]
    next_after: int | None = Field(description="pass as ?after= for the next page")
