"""The core contract: what a chat, a message and a turn's usage look like.

One module per topic; the rest of the package imports from here, which re-exports them all.
"""

from chatsessions.types.completions import Completion, StreamItem, ToolCallDelta, Usage
from chatsessions.types.enums import ContextPolicy, Role, TurnStatus
from chatsessions.types.formats import FORMAT_NAME, ResponseFormat
from chatsessions.types.params import GenerationParams
from chatsessions.types.parts import (
    ContentPart,
    ImagePart,
    TextPart,
    parts_json,
    parts_of_json,
    parts_text,
)
from chatsessions.types.records import ApiKey, Chat, Message, utcnow
from chatsessions.types.reports import ModelUsage, SearchHit, UsageReport
from chatsessions.types.runs import Run, RunStatus
from chatsessions.types.tools import TOOL_NAME, Tool, ToolCall, ToolOptions

__all__ = [
    "FORMAT_NAME",
    "TOOL_NAME",
    "ApiKey",
    "Chat",
    "Completion",
    "ContentPart",
    "ContextPolicy",
    "GenerationParams",
    "ImagePart",
    "Message",
    "ModelUsage",
    "ResponseFormat",
    "Role",
    "Run",
    "RunStatus",
    "SearchHit",
    "StreamItem",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolOptions",
    "TurnStatus",
    "Usage",
    "UsageReport",
    "parts_json",
    "parts_of_json",
    "parts_text",
    "utcnow",
]
