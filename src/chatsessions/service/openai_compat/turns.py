"""One request's turn, and the one place that hands it to the library: a text turn
(``sessions.send``/``stream``) or, when the input ends with tool outputs, a tool round
(``send_tool_results``/``stream_tool_results``), answered at once, streamed detached
from its reader, or run in the background: the same options every way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatsessions import AsyncChatSessions, Message, Run, ToolCallDelta
from chatsessions.service.openai_compat.items import Row
from chatsessions.types import GenerationParams, Role


@dataclass(frozen=True, slots=True)
class Turn:
    """What one request asks: after ``prior``, answer ``text`` (a user message) or the
    tool ``results`` (call id -> output), under ``instructions``, offering ``tools``."""

    instructions: str | None
    prior: list[Row]
    text: str | None
    results: dict[str, str]
    params: GenerationParams
    tools: dict[str, Any]
    #: the answer's format and this call's context policy, as library keywords
    shape: dict[str, Any]
    #: the user message's content as parts, when it holds images
    parts: list[Any] | None = None

    @property
    def asked(self) -> Any:
        """What the library is sent as the new message: its parts, else its text."""
        return self.parts if self.parts is not None else self.text

    @property
    def simple_prior(self) -> list[tuple[Role, str]] | None:
        """``prior`` as (role, text) pairs when it holds no tool call or output."""
        if any(row.role == "tool" or row.calls for row in self.prior):
            return None
        return [(Role(row.role), row.text) for row in self.prior]

    def keywords(self, expected: int | None) -> dict[str, Any]:
        """The library's keywords for this turn; ``expected``: the message count the chat
        must still have (a text turn's condition)."""
        common = {"params": self.params, "system_prompt": self.instructions, **self.tools,
                  **self.shape}
        if self.text is None:
            return common
        return {**common, "if_message_count": expected}


async def send(sessions: AsyncChatSessions, chat_id: str, turn: Turn,
               expected: int | None) -> Message:
    """The turn answered and stored; its answer."""
    if turn.text is None:
        return await sessions.send_tool_results(chat_id, turn.results, **turn.keywords(None))
    return await sessions.send(chat_id, turn.asked, **turn.keywords(expected))


async def start(sessions: AsyncChatSessions, chat_id: str, turn: Turn,
                expected: int | None, metadata: dict[str, Any]) -> Run:
    """The turn run in the background (``sessions.runs``); its run, queued."""
    if turn.text is None:
        return await sessions.runs.start_tool_results(
            chat_id, turn.results, metadata=metadata, **turn.keywords(None))
    return await sessions.runs.start(chat_id, turn.asked, metadata=metadata,
                                     **turn.keywords(expected))


class Detached:
    """A streamed turn's items, the turn detached from this reader (``sessions.runs``):
    a client that drops does not stop it, and can resume it. ``seq`` is the answer's,
    known from the first item on."""

    def __init__(self, sessions: AsyncChatSessions, chat_id: str, turn: Turn,
                 expected: int | None) -> None:
        self.seq = 0
        runs = sessions.runs
        self._steps = (
            runs.stream_tool_results(chat_id, turn.results, **turn.keywords(None))
            if turn.text is None
            else runs.stream(chat_id, turn.asked, **turn.keywords(expected)))

    def __aiter__(self) -> Detached:
        return self

    async def __anext__(self) -> str | ToolCallDelta | Message:
        step = await anext(self._steps)
        self.seq = step.seq
        return step.item

    async def aclose(self) -> None:
        await self._steps.aclose()
