"""Function tools: as chats and turns offer them, the calls answers make, and the outputs
sent back for them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from chatsessions.service.schemas.fields import LABEL_PATTERN, Text
from chatsessions.types import GenerationParams, Tool, ToolCall

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
