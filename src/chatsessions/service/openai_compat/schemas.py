"""Request bodies of /v1 and the objects it answers with.

Request models list what this server understands. Parameters it may safely ignore are
listed in ``IGNORED``; any other parameter sent with a value is refused with a 400 naming
it, so a client never silently loses a feature it asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from chatsessions.service.openai_compat.errors import bad_request, unsupported
from chatsessions.service.openai_compat.items import TEXT_PARTS
from chatsessions.service.schemas import CONTENT_PATTERN, LABEL_PATTERN, TEXT_PATTERN
from chatsessions.types import Chat, Usage

#: accepted and without effect here (routing hints, end-user ids, caching, service tiers)
IGNORED = frozenset({
    "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
    "service_tier", "max_tool_calls", "store", "metadata", "stream_options", "truncation",
    "n", "name", "prompt_cache_options",
})

# The published JSON schemas say exactly what is accepted; requests are still parsed
# loosely so that a refusal can name the offending parameter the way OpenAI does.
NO_NUL = TEXT_PATTERN
NOT_BLANK = CONTENT_PATTERN
ONE_LINE = LABEL_PATTERN
MAX_TEXT = 32_000  # the default message limit (CHATSESSIONS_MAX_MESSAGE_CHARS)
MAX_PARTS = 4
MAX_PART = (MAX_TEXT - MAX_PARTS) // MAX_PARTS  # parts are joined with newlines


def _content(pattern: str) -> dict[str, Any]:
    part = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
            "properties": {"type": {"enum": list(TEXT_PARTS)},
                           "text": {"type": "string", "maxLength": MAX_PART, "pattern": pattern}}}
    return {"anyOf": [{"type": "string", "maxLength": MAX_TEXT, "pattern": pattern},
                      {"type": "array", "minItems": 1, "maxItems": MAX_PARTS, "items": part}]}


def _messages(roles: list[str], pattern: str = NOT_BLANK, **limits: Any) -> dict[str, Any]:
    # Other keys (function_call, tool_calls, ...) are refused by name, so none is published.
    message = {"type": "object", "required": ["role", "content"], "additionalProperties": False,
               "properties": {"type": {"const": "message"}, "role": {"enum": roles},
                              "content": _content(pattern)}}
    return {"type": "array", "items": message, **limits}


METADATA = {"type": "object", "maxProperties": 16,
            "propertyNames": {"maxLength": 64, "pattern": NO_NUL},
            "additionalProperties": {"type": "string", "maxLength": 512, "pattern": NO_NUL}}

Items = Annotated[list[Any], WithJsonSchema(_messages(
    ["user", "assistant"], maxItems=20,
    description="user and assistant messages (text only)"))]
Metadata = Annotated[dict[str, Any], WithJsonSchema(METADATA)]


# tools --------------------------------------------------------------------------------

# Published: what is always accepted. Also accepted, but beyond what a schema can say:
# up to 128 tools with distinct names, any object schema as parameters, and a tool_choice
# of "required" or naming one of the tools offered.
_FUNCTION = {
    "name": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
    "description": {"type": "string", "maxLength": 10_000, "pattern": NO_NUL},
    "parameters": {"type": "object", "required": ["type"], "additionalProperties": False,
                   "properties": {"type": {"const": "object"},
                                  "properties": {"type": "object", "maxProperties": 0}}},
    "strict": {"type": ["boolean", "null"]}}
_MORE = "function tools (up to 128, distinct names; other tool types are refused)"
#: Responses' flat function tools; other tool types (web search, files...) are refused
RESPONSE_TOOLS = {"type": "array", "maxItems": 1, "description": _MORE, "items": {
    "type": "object", "required": ["type", "name"], "additionalProperties": False,
    "properties": {"type": {"const": "function"}, **_FUNCTION}}}
#: chat completions' function tools: the definition under ``function``
CHAT_TOOLS = {"type": "array", "maxItems": 1, "description": _MORE, "items": {
    "type": "object", "required": ["type", "function"], "additionalProperties": False,
    "properties": {"type": {"const": "function"}, "function": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": _FUNCTION}}}}


#: a named choice is accepted when it names a tool offered: no schema says that
TOOL_CHOICE = {"enum": ["auto", "none"],
               "description": '"auto", "none", "required", or {"type": "function", ...} '
                              "naming one of the tools offered"}


def function_tools(tools: list[Any] | None, *, flat: bool) -> list[dict[str, Any]] | None:
    """The function definitions of ``tools`` as the library reads them; any other tool
    type is refused by name (400), as a feature this server does not offer."""
    if tools is None:
        return None
    out = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise bad_request("Each tool must be an object with a 'type'.", where)
        if tool.get("type") != "function":
            raise unsupported(f"{where}.type",
                              f"Tools of type {tool.get('type')!r} are not supported")
        inner = tool if flat else tool.get("function")
        if not isinstance(inner, dict):
            raise bad_request("A function tool needs its definition under 'function'.",
                              f"{where}.function")
        out.append({key: inner[key] for key in ("name", "description", "parameters")
                    if inner.get(key) is not None})
    return out


def tool_keywords(tools: list[dict[str, Any]] | None, choice: str | dict[str, Any] | None,
                  parallel: bool | None) -> dict[str, Any]:
    """``tools``/``tool_choice``/``parallel_tool_calls`` for the library, as given: a named
    choice, in either API's shape, becomes the tool's name."""
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise unsupported("tool_choice", f"Tool choice of type {choice.get('type')!r} "
                              "is not supported")
        inner = choice.get("function", choice)
        choice = inner.get("name") if isinstance(inner, dict) else None
        if not isinstance(choice, str):
            raise bad_request("A function tool choice needs the function's 'name'.",
                              "tool_choice")
    if not tools and choice in ("auto", "none"):
        choice = None  # nothing offered: nothing to choose from, as before tools
    if not tools and choice is not None:
        raise bad_request(f"tool_choice {choice!r} needs 'tools' to choose from.",
                          "tool_choice")
    return {key: value for key, value in {
        "tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel}.items()
        if value is not None}


def _closed(*ignored: str, **rules: Any) -> Callable[[dict[str, Any]], None]:
    """A model schema that refuses unknown parameters and lists the ignored ones."""
    def schema(value: dict[str, Any]) -> None:
        value["additionalProperties"] = False
        for name in ignored:
            value["properties"].setdefault(name, {"description": "accepted, has no effect"})
        value.update(rules)
    return schema


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
    """Leading ``system``/``developer`` items (not listed here) become the system prompt."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_closed())

    items: Items | None = None
    metadata: Metadata | None = None


class ConversationUpdate(_Request):
    model_config = ConfigDict(extra="allow", json_schema_extra=_closed())

    metadata: Metadata


class ItemsCreate(_Request):
    model_config = ConfigDict(extra="allow", json_schema_extra=_closed())

    items: Items


#: The output formats every request may name without more (json_schema also needs a valid
#: JSON schema, which a request schema cannot state).
SIMPLE_FORMAT: dict[str, Any] = {
    "type": "object", "required": ["type"], "additionalProperties": False,
    "properties": {"type": {"enum": ["text", "json_object"]}}}


class ResponseCreate(_Request):
    """A text turn. ``input`` may also hold assistant messages and, anywhere,
    system/developer messages (this call's instructions) before its last, user, message."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_closed(
        "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
        "service_tier", "max_tool_calls", "stream_options", "truncation",
        "prompt_cache_options", **{"not": {"required": ["conversation", "previous_response_id"]}}))

    model: Annotated[str | None, WithJsonSchema(
        {"type": "string", "maxLength": 200, "pattern": ONE_LINE})] = None
    input: Annotated[str | list[Any], WithJsonSchema({"anyOf": [
        {"type": "string", "maxLength": MAX_TEXT, "pattern": NOT_BLANK},
        _messages(["user"], minItems=1)]})]
    instructions: Annotated[str | None, WithJsonSchema(
        {"type": "string", "maxLength": MAX_TEXT, "pattern": NO_NUL})] = None
    conversation: str | ConversationRef | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1, le=32768)
    metadata: Annotated[dict[str, str] | None, WithJsonSchema(METADATA)] = None
    # The simplest formats are published: a json_schema format is accepted too (with a
    # valid JSON schema, which cannot be stated here), as the description says.
    text: Annotated[dict[str, Any] | None, WithJsonSchema({
        "type": "object", "additionalProperties": False, "properties": {
            "format": SIMPLE_FORMAT}, "description": "text.format: text, json_object or "
        "json_schema (name, schema, strict)"})] = None
    truncation: Annotated[str | None, WithJsonSchema({"enum": ["auto", "disabled"]})] = None
    context_management: Annotated[list[Any] | None, WithJsonSchema({"type": "array", "items": {
        "type": "object", "required": ["type"],
        "properties": {"type": {"const": "compaction"}}}})] = None
    tools: Annotated[list[Any] | None, WithJsonSchema(RESPONSE_TOOLS)] = None
    tool_choice: Annotated[str | dict[str, Any] | None, WithJsonSchema(TOOL_CHOICE)] = None
    parallel_tool_calls: bool | None = None
    include: Annotated[list[str] | None, WithJsonSchema(
        {"type": "array", "maxItems": 0})] = None
    background: bool | None = None

    def refuse_unsupported(self) -> None:
        self.refuse_unknown()
        function_tools(self.tools, flat=True)
        if self.include:
            raise unsupported("include", "Extra output ('include') is not supported")
        _refuse_unstored_background(self)
        if self.text is not None and set(self.text) - {"format", "verbosity"}:
            raise unsupported(f"text.{sorted(set(self.text) - {'format', 'verbosity'})[0]}")

    def tool_options(self) -> dict[str, Any]:
        """The library's ``tools``/``tool_choice``/``parallel_tool_calls`` keywords."""
        return tool_keywords(function_tools(self.tools, flat=True), self.tool_choice,
                             self.parallel_tool_calls)

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation


class ChatCompletionCreate(_Request):
    model_config = ConfigDict(extra="allow", json_schema_extra=_closed(
        "user", "metadata", "store", "service_tier", "prompt_cache_key",
        "safety_identifier"))

    model: str = Field(max_length=200)
    messages: Annotated[list[Any], Field(min_length=1), WithJsonSchema(_messages(
        ["system", "developer", "user", "assistant"], NO_NUL, minItems=1,
        description="text messages; an assistant message's `tool_calls` and `tool` "
        "messages (`tool_call_id`, `content`) are accepted too, each call followed by its "
        "output"))]
    stream: bool | None = None
    stream_options: Annotated[dict[str, Any] | None, WithJsonSchema(
        {"type": "object", "properties": {"include_usage": {"type": "boolean"}}})] = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: Annotated[int | None, WithJsonSchema({"const": 1})] = None
    response_format: Annotated[dict[str, Any] | None, WithJsonSchema({
        **SIMPLE_FORMAT, "description": "text, json_object or json_schema ({name, schema, "
        "strict})"})] = None
    tools: Annotated[list[Any] | None, WithJsonSchema(CHAT_TOOLS)] = None
    tool_choice: Annotated[str | dict[str, Any] | None, WithJsonSchema(TOOL_CHOICE)] = None
    parallel_tool_calls: bool | None = None

    def refuse_unsupported(self) -> None:
        self.refuse_unknown()
        if self.n not in (None, 1):
            raise unsupported("n", "Only one choice (n=1) is supported")
        function_tools(self.tools, flat=False)

    def tool_options(self) -> dict[str, Any]:
        """The library's ``tools``/``tool_choice``/``parallel_tool_calls`` keywords."""
        return tool_keywords(function_tools(self.tools, flat=False), self.tool_choice,
                             self.parallel_tool_calls)


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


def _refuse_unstored_background(body: ResponseCreate) -> None:
    if body.background and body.store is False:
        raise bad_request("Background responses are stored: 'store' must not be false.",
                          "background")


def response_object(
    *,
    id_: str,
    created_at: float,
    model: str,
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled"],
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    request: ResponseCreate | None = None,
    conversation_id: str | None = None,
    previous_response_id: str | None = None,
    error: dict[str, Any] | None = None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """A Response object; ``request`` supplies the settings echoed back on creation."""
    request = request or ResponseCreate(input="")
    return {
        "id": id_, "object": "response", "created_at": created_at, "status": status,
        "completed_at": completed_at, "background": bool(request.background),
        "error": error,
        "incomplete_details": None, "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens, "model": model, "output": output,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": previous_response_id or request.previous_response_id,
        "reasoning": None, "store": request.store is not False,
        "temperature": request.temperature, "top_p": request.top_p,
        "text": {"format": (request.text or {}).get("format") or {"type": "text"}},
        "tool_choice": request.tool_choice or ("auto" if request.tools else "none"),
        "tools": [{"strict": None, "description": None, "parameters": None, **tool}
                  for tool in request.tools or ()],
        "truncation": request.truncation or "auto",
        "usage": None if usage is None else response_usage(usage),
        "user": None, "metadata": request.metadata or {},
        "conversation": {"id": conversation_id} if conversation_id else None,
    }
