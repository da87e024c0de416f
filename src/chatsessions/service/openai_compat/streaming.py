"""The Responses API's Server-Sent Events, in the order the official client parses them.

``response.created``, ``response.in_progress``, then per output item
``response.output_item.added``, its content (a message: ``response.content_part.added``,
``response.output_text.delta``..., ``response.output_text.done``,
``response.content_part.done``; a function call:
``response.function_call_arguments.delta``..., ``response.function_call_arguments.done``)
and ``response.output_item.done``; last ``response.completed``, or ``response.failed``
when the model fails after the stream began (a failure before it is an HTTP error).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any

from chatsessions import Completion
from chatsessions.errors import BackendError, ChatSessionsError
from chatsessions.service import sse
from chatsessions.service.openai_compat.items import (
    ITEM_PREFIX,
    call_item_id_of,
    function_call_item,
    output_message,
    output_text,
)
from chatsessions.types import Message, Role, StreamItem, ToolCall, ToolCallDelta


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


def final_calls(item: Message | Completion) -> tuple[ToolCall, ...]:
    return (item.tool_calls or ()) if isinstance(item, Message) else item.tool_calls


class _Output:
    """The output items of one streamed answer as they open and close: a message item
    for its text, a ``function_call`` item per call, each closed before the next opens."""

    def __init__(self, base: str, event: Callable[..., bytes]) -> None:
        self.base = base
        self.event = event
        self.items: list[dict[str, Any]] = []
        self.text: list[str] = []
        self.open: dict[str, Any] | None = None  # the item being written
        self.arguments: list[str] = []

    def _where(self) -> dict[str, Any]:
        assert self.open is not None
        return {"item_id": self.open["id"], "output_index": len(self.items)}

    def text_delta(self, delta: str) -> Iterator[bytes]:
        if self.open is None or self.open["type"] != "message":
            yield from self.close()
            self.open = output_message(f"{ITEM_PREFIX}{self.base}", None, "in_progress")
            yield self.event("response.output_item.added", output_index=len(self.items),
                             item=self.open)
            yield self.event("response.content_part.added", **self._where(), content_index=0,
                             part=output_text(""))
        if delta:
            self.text.append(delta)
            yield self.event("response.output_text.delta", **self._where(), content_index=0,
                             delta=delta, logprobs=[])

    def call_piece(self, piece: ToolCallDelta) -> Iterator[bytes]:
        if piece.id is not None or self.open is None or self.open["type"] != "function_call":
            yield from self.close()
            call = ToolCall(piece.id or "", piece.name or "", "")
            self.open = function_call_item(call_item_id_of(self.base, piece.index), call,
                                           "in_progress")
            yield self.event("response.output_item.added", output_index=len(self.items),
                             item=self.open)
        if piece.arguments:
            self.arguments.append(piece.arguments)
            yield self.event("response.function_call_arguments.delta", **self._where(),
                             delta=piece.arguments)

    def close(self, final: ToolCall | str | None = None) -> Iterator[bytes]:
        """Close the open item; ``final``: its whole text or call, when known."""
        if self.open is None:
            return
        where = self._where()
        if self.open["type"] == "message":
            text = final if isinstance(final, str) else "".join(self.text)
            yield self.event("response.output_text.done", **where, content_index=0, text=text,
                             logprobs=[])
            yield self.event("response.content_part.done", **where, content_index=0,
                             part=output_text(text))
            done = output_message(self.open["id"], text)
        else:
            call = final if isinstance(final, ToolCall) else ToolCall(
                self.open["call_id"], self.open["name"], "".join(self.arguments))
            yield self.event("response.function_call_arguments.done", **where,
                             name=call.name, arguments=call.arguments)
            done = function_call_item(self.open["id"], call)
        yield self.event("response.output_item.done", output_index=len(self.items), item=done)
        self.items.append(done)
        self.open, self.arguments = None, []

    def finish(self, text: str, calls: tuple[ToolCall, ...]) -> Iterator[bytes]:
        """Close what is open and add what the stream did not show, so the items are
        those of the answer as stored (see :func:`output_items`)."""
        written = any(item["type"] == "message" for item in self.items)
        if self.open is not None and self.open["type"] == "message":
            yield from self.close(text)
        elif not written and (text or not calls):
            yield from self.text_delta("")
            yield from self.close(text)
        shown = {item.get("call_id") for item in self.items}
        for index, call in enumerate(calls):
            if self.open is not None and self.open["call_id"] == call.id:
                yield from self.close(call)
            elif call.id not in shown:
                yield from self.close()
                yield from self.call_piece(ToolCallDelta(index, call.id, call.name))
                yield from self.close(call)
        yield from self.close()


async def response_events(
    base: str,
    first: StreamItem | Message,
    rest: AsyncIterator[StreamItem | Message],
    snapshot: Snapshot,
) -> AsyncIterator[list[bytes]]:
    """The whole event sequence for one answer whose first item is already known; its
    items' ids are ``msg_<base>`` and ``fc_<base>_<n>``. Events come in batches: those
    ready before the next wait for the model (the opening four and the first delta, each
    delta, the closing ones), so a batch goes out as one write (:func:`joined`)."""
    numbers = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        return sse.event(kind, {"type": kind, "sequence_number": next(numbers), **fields})

    output = _Output(base, event)
    async with aclosing(rest):  # type: ignore[type-var]
        started = snapshot("in_progress", [], None, None)
        ready = [event("response.created", response=started),
                 event("response.in_progress", response=started)]
        trimmed = TrimmedDeltas()
        item = first
        try:
            while not isinstance(item, Completion) and not (
                    isinstance(item, Message) and item.role is Role.ASSISTANT):
                if isinstance(item, Message):
                    pass  # a tool output stored with the answer: it is input, not output
                elif isinstance(item, ToolCallDelta):
                    ready.extend(output.call_piece(item))
                else:
                    delta = trimmed.feed(item)
                    if delta:
                        ready.extend(output.text_delta(delta))
                if ready:  # sent before waiting for the next item
                    yield ready
                    ready = []
                item = await anext(rest)
        except (ChatSessionsError, StopAsyncIteration) as exc:
            if isinstance(exc, StopAsyncIteration):
                exc = BackendError("the model ended without an answer")
            error = {"code": "server_error", "message": str(exc)}
            yield [*ready, event("response.failed", response=snapshot("failed", [], None, error))]
            return
    yield [*ready, *output.finish(final_text(item), final_calls(item)),
           event("response.completed", response=snapshot("completed", output.items, item, None))]


async def joined(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    """Each batch of events as one chunk of the response body."""
    async with aclosing(batches):  # type: ignore[type-var]
        async for batch in batches:
            yield b"".join(batch)


def now() -> float:
    return float(int(time.time()))
