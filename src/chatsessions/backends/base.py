"""The backend protocol: everything a turn needs from a model, nothing more."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

from chatsessions.types import Completion as Completion  # defined with the public types
from chatsessions.types import GenerationParams, ResponseFormat, ToolOptions
from chatsessions.types import StreamItem as StreamItem
from chatsessions.types import ToolCallDelta as ToolCallDelta

#: Messages in OpenAI's chat shape (``Message.as_openai``): ``{"role", "content"}``, plus
#: ``tool_calls`` on answers that call tools and ``tool_call_id`` on tool outputs; a
#: message with images has its content as a list of ``text`` and ``image_url`` parts.
ChatMessages = Sequence[dict[str, Any]]

#: Which conversation the current call continues (the chat id), set by the turn. A hint for
#: backends that keep per-conversation state (the local model's KV cache); others ignore it.
conversation: ContextVar[str | None] = ContextVar("conversation", default=None)


class Backend(Protocol):
    name: str
    default_model: str

    async def complete(
        self, messages: ChatMessages, params: GenerationParams, model: str, *,
        tools: ToolOptions | None = None, response_format: ResponseFormat | None = None,
    ) -> Completion:
        """Answer the whole history; raise ``BackendError`` on failure. ``tools``: the
        functions the model may call; a backend that cannot offer them raises
        ``InvalidInput`` rather than answer as if it had none. ``response_format``: the
        shape the answer must take (checked already); likewise refused, not ignored, by
        a backend that cannot keep to it. Messages with images (content as a list of
        parts) are refused the same way by a backend that cannot see them."""

    def stream(
        self, messages: ChatMessages, params: GenerationParams, model: str, *,
        tools: ToolOptions | None = None, response_format: ResponseFormat | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        """Like ``complete`` but yields deltas as they arrive."""

    def count_tokens(self, role: str, content: str, model: str) -> int:
        """Tokens one message takes in the prompt, template overhead included."""

    def context_window(self, model: str) -> int: ...

    async def aclose(self) -> None: ...

