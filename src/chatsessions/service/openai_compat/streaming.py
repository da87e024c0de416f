"""The Responses API's Server-Sent Events, in the order the official client parses them.

``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``...,
``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``, ``response.completed``; or ``response.failed`` when the
model fails after the stream began (a failure before it is an HTTP error instead).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from chatsessions import Completion
from chatsessions.errors import BackendError, ChatSessionsError
from chatsessions.service import sse
from chatsessions.service.openai_compat.items import output_message, output_text
from chatsessions.types import Message

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_or_events(description: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: a JSON object, or with ``stream`` Server-Sent Events."""
    return {200: {"content": {"application/json": {}, "text/event-stream": {}},
                  "description": description}}

#: builds the Response object at each stage: (status, output items, final item, error)
Snapshot = Callable[[str, list[dict[str, Any]], "Message | Completion | None",
                     "dict[str, Any] | None"], dict[str, Any]]


class TrimmedDeltas:
    """Deltas whose concatenation equals the stored answer, which is stripped: leading
    whitespace is dropped and trailing whitespace held back until more text follows."""

    def __init__(self) -> None:
        self._started = False
        self._pending = ""

    def feed(self, delta: str) -> str:
        if not self._started:
            delta = delta.lstrip()
            if not delta:
                return ""
            self._started = True
        text = self._pending + delta
        body = text.rstrip()
        self._pending = text[len(body):]
        return body


def final_text(item: Message | Completion) -> str:
    return item.content if isinstance(item, Message) else item.text.strip()


async def response_events(
    item_id: str,
    first: str | Message | Completion,
    rest: AsyncIterator[str | Message | Completion],
    snapshot: Snapshot,
) -> AsyncIterator[bytes]:
    """The whole event sequence for one answer whose first item is already known."""
    numbers = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        return sse.event(kind, {"type": kind, "sequence_number": next(numbers), **fields})

    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    async with aclosing(rest):  # type: ignore[type-var]
        started = snapshot("in_progress", [], None, None)
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        yield event("response.output_item.added", output_index=0,
                    item=output_message(item_id, None, "in_progress"))
        yield event("response.content_part.added", **where, part=output_text(""))
        trimmed = TrimmedDeltas()
        item = first
        try:
            while isinstance(item, str):
                delta = trimmed.feed(item)
                if delta:
                    yield event("response.output_text.delta", **where, delta=delta, logprobs=[])
                item = await anext(rest)
        except (ChatSessionsError, StopAsyncIteration) as exc:
            if isinstance(exc, StopAsyncIteration):
                exc = BackendError("the model ended without an answer")
            error = {"code": "server_error", "message": str(exc)}
            yield event("response.failed", response=snapshot("failed", [], None, error))
            return
    text = final_text(item)
    yield event("response.output_text.done", **where, text=text, logprobs=[])
    yield event("response.content_part.done", **where, part=output_text(text))
    done = output_message(item_id, text)
    yield event("response.output_item.done", output_index=0, item=done)
    yield event("response.completed", response=snapshot("completed", [done], item, None))


def now() -> float:
    return float(int(time.time()))
