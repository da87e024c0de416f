"""The typed error hierarchy; the service maps each class to one HTTP status, once."""

from __future__ import annotations


class ChatSessionsError(Exception):
    """Base class of every error raised on purpose by chatsessions."""

    #: short machine-readable name, used as the HTTP error ``type``
    type: str = "error"


class ChatNotFound(ChatSessionsError, ValueError):
    """The chat does not exist (or belongs to another tenant).

    A ``ValueError`` because the tutorial promised one.
    """

    type = "not_found"

    def __init__(self, chat_id: str) -> None:
        shown = chat_id if len(chat_id) <= 100 else chat_id[:100] + "…"
        super().__init__(f"Chat session not found! ({shown})")
        self.chat_id = chat_id


class InvalidInput(ChatSessionsError, ValueError):
    """The caller sent something we refuse to store: empty, oversized, bad parameters."""

    type = "invalid_request"


class ChatExists(InvalidInput):
    """A chat with the requested id already exists (ids are unique across tenants)."""

    type = "chat_exists"

    def __init__(self, chat_id: str) -> None:
        super().__init__(f"a chat with id {chat_id} already exists")
        self.chat_id = chat_id


class ContextTooLong(InvalidInput):
    """Even the system prompt and the new message alone exceed the model's window."""

    type = "context_too_long"


class ChatBusy(ChatSessionsError):
    """Another turn of the same chat held the chat longer than we were willing to wait."""

    type = "chat_busy"

    def __init__(self, chat_id: str, retry_after: float = 1.0) -> None:
        super().__init__(f"Chat {chat_id} is busy with another turn; retry shortly")
        self.chat_id = chat_id
        self.retry_after = retry_after


class TurnInterrupted(ChatSessionsError):
    """This turn lost its chat to another replica (its lease expired); nothing was stored."""

    type = "turn_interrupted"


class ChatMoved(ChatSessionsError):
    """The chat no longer holds the messages the caller expected (another turn or edit
    came first); nothing was stored."""

    type = "chat_moved"

    def __init__(self, chat_id: str) -> None:
        super().__init__(f"Chat {chat_id} has moved on: another turn or edit came first")
        self.chat_id = chat_id


class ToolCallsPending(ChatSessionsError):
    """The chat's last answer called tools whose outputs have not come yet: a new user
    message would show the model calls without their outputs. Submit the outputs
    (``send_tool_results``) or cancel the calls (``cancel_tool_calls``) first."""

    type = "tool_calls_pending"

    def __init__(self, chat_id: str, call_ids: list[str]) -> None:
        super().__init__(
            f"Chat {chat_id} is waiting for the outputs of tool calls {', '.join(call_ids)}: "
            "submit them (send_tool_results, POST /chats/{id}/tool-results) or cancel the "
            "calls (cancel_tool_calls) before sending a new message")
        self.chat_id = chat_id
        self.call_ids = call_ids


class BackendError(ChatSessionsError):
    """The model call failed; the user's message is kept and the turn is marked failed."""

    type = "backend_error"

    def __init__(self, message: str, *, status_code: int | None = None,
                 partial: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        #: text streamed before the failure, if any
        self.partial = partial
        #: the chat holding the failed turn when the caller could not know it (an edit's
        #: new fork), so it can be retried there
        self.chat_id: str | None = None


class BackendTimeout(BackendError):
    """The model did not answer within the deadline."""

    type = "backend_timeout"


class BackendUnavailable(BackendError):
    """The backend is known to be down (circuit open or cannot be loaded)."""

    type = "backend_unavailable"
