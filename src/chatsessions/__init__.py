"""chatsessions: many simultaneous, durable conversations with large language models.

The public API is re-exported here; everything else is an implementation detail.
"""

from chatsessions.config import Settings
from chatsessions.engine.structured import check_response_format
from chatsessions.engine.tools import ToolSpec
from chatsessions.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ChatBusy,
    ChatExists,
    ChatMoved,
    ChatNotFound,
    ChatSessionsError,
    ContextTooLong,
    DatabaseUnavailable,
    InvalidAnswer,
    InvalidInput,
    RunNotFound,
    ToolCallsPending,
    TurnInterrupted,
)
from chatsessions.keys import ApiKeys, AsyncApiKeys
from chatsessions.prompts import DEFAULT_SYSTEM_PROMPT
from chatsessions.runs import AsyncRuns, Runs, Step
from chatsessions.sessions import AsyncChatSessions
from chatsessions.sync import ChatSessions
from chatsessions.types import (
    ApiKey,
    Chat,
    Completion,
    ContextPolicy,
    GenerationParams,
    Message,
    ModelUsage,
    ResponseFormat,
    Role,
    Run,
    RunStatus,
    SearchHit,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolOptions,
    TurnStatus,
    Usage,
    UsageReport,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "ApiKey",
    "ApiKeys",
    "AsyncApiKeys",
    "AsyncChatSessions",
    "AsyncRuns",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "Chat",
    "ChatBusy",
    "ChatExists",
    "ChatMoved",
    "ChatNotFound",
    "ChatSessions",
    "ChatSessionsError",
    "Completion",
    "ContextPolicy",
    "ContextTooLong",
    "DatabaseUnavailable",
    "GenerationParams",
    "InvalidAnswer",
    "InvalidInput",
    "Message",
    "ModelUsage",
    "ResponseFormat",
    "Role",
    "Run",
    "RunNotFound",
    "RunStatus",
    "Runs",
    "SearchHit",
    "Settings",
    "Step",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallsPending",
    "ToolOptions",
    "ToolSpec",
    "TurnInterrupted",
    "TurnStatus",
    "Usage",
    "UsageReport",
    "check_response_format",
]
__version__ = "0.1.0"
