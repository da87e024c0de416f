"""chatsessions: many simultaneous, durable conversations with large language models.

The public API is re-exported here; everything else is an implementation detail.
"""

from chatsessions.config import Settings
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
    InvalidInput,
    ToolCallsPending,
    TurnInterrupted,
)
from chatsessions.keys import ApiKeys, AsyncApiKeys
from chatsessions.prompts import DEFAULT_SYSTEM_PROMPT
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
    Role,
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
    "GenerationParams",
    "InvalidInput",
    "Message",
    "ModelUsage",
    "Role",
    "SearchHit",
    "Settings",
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
]
__version__ = "0.1.0"
