"""A third-party backend as a plugin package ships one: it answers with the last user
message, behind an option of its own, and registers itself through the entry point in its
``*.dist-info/entry_points.txt`` and nothing else."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from pydantic import BaseModel, ConfigDict

from chatsessions.backends import Completion, StreamItem
from chatsessions.config import Settings
from chatsessions.types import GenerationParams, Usage


class EchoOptions(BaseModel):
    """What ``Settings.backend_options["echo"]`` may hold; anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = "echo: "


class EchoBackend:
    name = "echo"
    default_model = "echo-1"

    def __init__(self, settings: Settings) -> None:
        self.options = EchoOptions(**settings.backend_options.get(self.name, {}))
        self.calls = 0

    def _answer(self, messages: Sequence[dict[str, str]]) -> str:
        self.calls += 1
        last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return self.options.prefix + last

    async def complete(self, messages: Sequence[dict[str, str]], params: GenerationParams,
                       model: str) -> Completion:
        text = self._answer(messages)
        return Completion(text, self._usage(messages, text), model or self.default_model,
                          "stop")

    async def stream(self, messages: Sequence[dict[str, str]], params: GenerationParams,
                     model: str) -> AsyncGenerator[StreamItem, None]:
        text = self._answer(messages)
        half = len(text) // 2
        yield text[:half]
        yield text[half:]
        yield Completion(text, self._usage(messages, text), model or self.default_model, "stop")

    def _usage(self, messages: Sequence[dict[str, str]], text: str) -> Usage:
        prompt = sum(self.count_tokens(m["role"], m["content"], "") for m in messages)
        return Usage(prompt, self.count_tokens("assistant", text, ""))

    def count_tokens(self, role: str, content: str, model: str) -> int:
        return len(content.split()) + 3

    def context_window(self, model: str) -> int:
        return 4096

    async def aclose(self) -> None:
        return None
