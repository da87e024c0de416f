"""Request and response models, one family per resource (Create / Update / Public)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)

from chatsessions.types import (
    Chat,
    GenerationParams,
    Message,
    SearchHit,
    Tool,
    ToolCall,
    UsageReport,
)

LABEL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00]*$"
#: what ``str.strip`` removes, spelled out: ``\s`` differs between Python and ECMA regexes
BLANK = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
CONTENT_PATTERN = rf"^[^\x00]*[^\x00{BLANK}][^\x00]*$"
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


ContextPolicyName = Literal["trim", "summarize", "none"]
CONTEXT_POLICY_HELP = (
    "when the chat outgrows the model's context window: trim drops the oldest whole turns, "
    "summarize replaces them with a summary the model writes (stored as a system message), "
    "none sends everything and refuses a turn that does not fit (422 context_too_long)")


TOOL_CHOICE_HELP = ('"auto", "none", "required" or the name of one of the tools')
#: Published as the three keywords: a tool's name is accepted too, but only if it names one
#: of the tools, which a schema cannot say (the description does).
ToolChoice = Annotated[str, StringConstraints(max_length=64, pattern=LABEL_PATTERN),
                       WithJsonSchema({"type": "string", "enum": ["auto", "none", "required"],
                                       "description": TOOL_CHOICE_HELP})]


class FunctionDefinition(BaseModel):
    """A function the model may call: OpenAI's ``function`` object."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""
    parameters: Annotated[dict[str, Any], WithJsonSchema({
        "type": "object", "required": ["type"], "properties": {"type": {"const": "object"}},
        "description": 'a JSON schema of "type": "object" for the arguments'})] = Field(
        default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolDefinition(BaseModel):
    """A tool in OpenAI's shape: ``{"type": "function", "function": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"] = "function"
    function: FunctionDefinition

    def spec(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

    @classmethod
    def of(cls, tool: Tool) -> ToolDefinition:
        return cls(function=FunctionDefinition(name=tool.name, description=tool.description,
                                               parameters=dict(tool.parameters)))


#: Up to 128 tools with distinct names. A schema cannot say "distinct names", so the
#: published one lists a single tool (what every schema-valid request can then be), and its
#: description says the rest.
Tools = Annotated[list[ToolDefinition], Field(max_length=128, json_schema_extra={
    "maxItems": 1, "description": "up to 128 tools, with distinct names"})]


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="JSON text exactly as the model wrote it")


class ToolCallPublic(BaseModel):
    """A call an answer made, in OpenAI's chat shape."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    @classmethod
    def of(cls, call: ToolCall) -> ToolCallPublic:
        return cls(id=call.id, function=FunctionCall(name=call.name,
                                                     arguments=call.arguments))


class ToolResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_call_id: Annotated[str, StringConstraints(min_length=1, max_length=200,
                                                   pattern=LABEL_PATTERN)]
    output: Text = Field(description="what the tool returned, as the model should see it")


class ToolResultsCreate(BaseModel):
    """The outputs of every call the chat is waiting for, at once."""

    model_config = ConfigDict(extra="forbid")

    results: Annotated[list[ToolResult], Field(min_length=1, max_length=128)]
    params: GenerationParams | None = Field(
        default=None, description="overrides the chat's params for this answer")
    tools: Tools | None = Field(default=None, description="replace the chat's tools for "
                                                          "this answer")
    tool_choice: ToolChoice | None = Field(default=None, description=TOOL_CHOICE_HELP)
    parallel_tool_calls: bool | None = None
    stream: bool = Field(default=False, description="answer with Server-Sent Events")


class ToolCallsCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_ids: list[Annotated[str, StringConstraints(max_length=200)]] | None = Field(
        default=None, description="the pending calls to cancel (default: all)")


class PendingToolCalls(BaseModel):
    data: list[ToolCallPublic]


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. not_found, invalid_request")
    message: str = Field(description="what went wrong, for humans")
    chat_id: str | None = Field(
        default=None, description="a failed edit: the new chat holding the edited message, "
                                  "marked failed, to retry there")


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


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


class ModelUsagePublic(BaseModel):
    model: str
    turns: int = Field(description="answered turns")
    summaries: int = Field(description="summaries written under the summarize policy")
    prompt_tokens: int = Field(description="of the answers and the summaries")
    completion_tokens: int = Field(description="of the answers and the summaries")
    cost: float = Field(description="USD, from the price table; 0 when unpriced")
    priced: bool = Field(description="false when the price table has no entry for the model")


class UsagePublic(BaseModel):
    """A tenant's usage over [from, to); an open end means no bound."""

    start: datetime | None = Field(serialization_alias="from")
    end: datetime | None = Field(serialization_alias="to")
    models: list[ModelUsagePublic]
    turns: int
    summaries: int
    prompt_tokens: int
    completion_tokens: int
    cost: float = Field(description="USD; excludes unpriced models")
    unpriced: list[str] = Field(description="models used without a price")

    @classmethod
    def of(cls, report: UsageReport) -> UsagePublic:
        return cls(
            start=report.start, end=report.end,
            models=[ModelUsagePublic(model=m.model, turns=m.turns, summaries=m.summaries,
                                     prompt_tokens=m.prompt_tokens,
                                     completion_tokens=m.completion_tokens, cost=m.cost,
                                     priced=m.priced) for m in report.models],
            turns=report.turns, summaries=report.summaries, prompt_tokens=report.prompt_tokens,
            completion_tokens=report.completion_tokens, cost=report.cost,
            unpriced=report.unpriced,
        )


class SearchHitPublic(BaseModel):
    chat_id: str
    seq: int
    role: Literal["system", "user", "assistant", "tool"]
    snippet: str = Field(description="the matching words in context, marked [like this]")
    created_at: datetime

    @classmethod
    def of(cls, hit: SearchHit) -> SearchHitPublic:
        return cls(chat_id=hit.chat_id, seq=hit.seq, role=hit.role.value, snippet=hit.snippet,
                   created_at=hit.created_at)


class SearchResults(BaseModel):
    data: list[SearchHitPublic]


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
