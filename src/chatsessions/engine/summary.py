"""Summaries for the ``summarize`` context policy: what the model is asked, and how a
summary is shown in place of the turns it stands for.

The chat's own backend and model write the summary, from the previous summary plus the
turns it must now take in, so a summary never grows with the chat's length. It is stored
as a message of its own (role ``system``, ``covers_seq`` = the last seq it stands for),
never sent as an ordinary history turn.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from chatsessions.backends import Backend
from chatsessions.backends.base import ChatMessages
from chatsessions.engine.model_call import ModelCalls
from chatsessions.errors import BackendError
from chatsessions.types import GenerationParams, Message, Role

#: The system prompt of a summary request.
INSTRUCTION = (
    "You summarize conversations between a user and an assistant. Keep names, numbers, "
    "facts, decisions, open questions and the user's preferences, so that the assistant "
    "can go on from your summary alone. Write only the summary, in plain prose."
)
#: Opens the request's user message: the model reads the task before the material.
REQUEST = "Summarize the conversation below for the assistant who will continue it."
#: Introduces the summary where the chat's context shows it.
SHOWN_AS = "Summary of the earlier conversation (those messages are left out):\n"
#: Smallest and largest answer a summary may be given (tokens).
MIN_TOKENS = 32
MAX_TOKENS = 1024
#: The least room a request must leave for the conversation it summarizes (tokens).
MIN_TRANSCRIPT_TOKENS = 32

_SPEAKERS = {Role.USER: "User", Role.ASSISTANT: "Assistant"}


@dataclass(frozen=True, slots=True)
class Refresh:
    """A summary to write before the answer: ``previous`` and ``turns`` in one."""

    previous: Message | None
    #: the turns to take in, oldest first (the newest of them that fit one request)
    turns: list[Message]
    #: the last seq the new summary stands for
    covers_seq: int
    #: tokens the summary may take
    max_tokens: int


def token_limit(budget: int) -> int:
    """A summary's answer limit: an eighth of the history's budget, within bounds, so the
    turns that follow it keep most of the window."""
    return max(MIN_TOKENS, min(MAX_TOKENS, budget // 8))


def shown(summary: Message) -> dict[str, str]:
    """The summary as the chat's context carries it: one system message."""
    return {"role": "system", "content": SHOWN_AS + summary.content}


def request(previous: Message | None, turns: Sequence[Message]) -> ChatMessages:
    """The summary request for ``previous`` plus ``turns`` (an empty ``turns`` gives the
    request's fixed part, to measure what room the turns have)."""
    parts = [REQUEST]
    if previous is not None:
        parts.append("Summary of what came before:\n" + previous.content)
    if turns:
        parts.append("Conversation:\n" + "\n\n".join(
            f"{_SPEAKERS.get(m.role, m.role.value)}: {m.content}" for m in turns))
    return [{"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": "\n\n".join(parts)}]


async def write(
    models: ModelCalls, backend: Backend, chat_id: str, model: str, refresh: Refresh
) -> Message:
    """Ask the model for the new summary; the message to store (not yet stored).

    Failing here fails the turn like a failed answer (the user's message is kept and a
    retry goes on): answering without the summary would silently show the model less than
    the chat's policy promises. A one-off call (no ``chat_id``): a backend keeping
    per-chat state must not file it under the chat's.
    """
    started = time.perf_counter()
    params = GenerationParams(max_tokens=refresh.max_tokens)
    completion = await models.complete(
        backend, request(refresh.previous, refresh.turns), params, model)
    text = completion.text.strip()
    if not text:
        raise BackendError("the model wrote an empty summary of the earlier conversation")
    return Message(
        chat_id=chat_id, seq=0, role=Role.SYSTEM, content=text, model=completion.model,
        prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
        latency_ms=int((time.perf_counter() - started) * 1000),
        covers_seq=refresh.covers_seq,
    )
