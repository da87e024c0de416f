"""The backend protocol: everything a turn needs from a model, nothing more."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from chatsessions.types import Completion as Completion  # defined with the public types
from chatsessions.types import GenerationParams
from chatsessions.types import StreamItem as StreamItem

if TYPE_CHECKING:
    from chatsessions.config import Settings

ChatMessages = Sequence[dict[str, str]]

#: Which conversation the current call continues (the chat id), set by the turn. A hint for
#: backends that keep per-conversation state (the local model's KV cache); others ignore it.
conversation: ContextVar[str | None] = ContextVar("conversation", default=None)


class Backend(Protocol):
    name: str
    default_model: str

    async def complete(
        self, messages: ChatMessages, params: GenerationParams, model: str
    ) -> Completion:
        """Answer the whole history; raise ``BackendError`` on failure."""

    def stream(
        self, messages: ChatMessages, params: GenerationParams, model: str
    ) -> AsyncGenerator[StreamItem, None]:
        """Like ``complete`` but yields deltas as they arrive."""

    def count_tokens(self, role: str, content: str, model: str) -> int:
        """Tokens one message takes in the prompt, template overhead included."""

    def context_window(self, model: str) -> int: ...

    async def aclose(self) -> None: ...


def make_backend(name: str, settings: Settings) -> Backend:
    """The one registration path, first-party backends included."""
    if name == "openai":
        from chatsessions.backends.openai import OpenAIBackend

        return OpenAIBackend(settings)
    if name == "local":
        from chatsessions.backends.local import LocalBackend

        return LocalBackend(settings)
    from chatsessions.errors import InvalidInput

    raise InvalidInput(f"unknown backend {name!r} (expected 'local' or 'openai')")
