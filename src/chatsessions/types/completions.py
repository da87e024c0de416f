"""What one model call gives back, before anything is stored: the answer, its tokens and
the tool calls streaming in. The backends' side of the contract."""

from __future__ import annotations

from dataclasses import dataclass

from chatsessions.types.tools import ToolCall


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer of the model, as a backend returns it (nothing stored): its text, the
    tokens it took, the model that wrote it, and why it stopped (``stop``, ``length``...)."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    #: the functions the model asked to run (``finish_reason`` "tool_calls"), in order
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call as it streams in, for a client to watch it being written.
    ``index`` tells the calls of one answer apart; ``id`` and ``name`` come with a call's
    first piece, each piece after that adds to its ``arguments`` JSON text. The final
    ``Completion`` holds every call whole."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


#: A streamed model call yields text deltas and tool-call pieces, then exactly one final
#: ``Completion``.
StreamItem = str | ToolCallDelta | Completion
