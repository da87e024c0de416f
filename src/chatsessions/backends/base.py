"""The backend protocol: everything a turn needs from a model, nothing more."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from chatsessions.types import GenerationParams, Usage

ChatMessages = Sequence[dict[str, str]]

#: Which conversation the current call continues (the chat id), set by the turn. A hint for
#: backends that keep per-conversation state (the local model's KV cache); others ignore it.
conversation: ContextVar[str | None] = ContextVar("conversation", default=None)


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None


#: ``stream`` yields text deltas, then exactly one final ``Completion``.
StreamItem = str | Completion


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

