"""A turn's Server-Sent Events, numbered so a client can resume them.

``POST /chats/{id}/messages`` with ``stream`` gives each event an id ``<seq>:<n>``: the
seq of the answer being written and the event's number. The turn does not depend on the
connection: if it drops, ``GET /chats/{id}/messages/{seq}/events`` with that id as
``Last-Event-ID`` (or ``?after=n``) replays what was missed, then follows live to the end.
On the replica running the turn the replay is exact; elsewhere the turn is read back from
storage once it ends, as one ``done`` event (``delta`` + ``done`` for a reader from the
start), numbered after what the reader saw.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from chatsessions import ChatSessionsError, Message, Role, Step, ToolCallDelta
from chatsessions.service import sse
from chatsessions.service.deps import SessionsDep
from chatsessions.service.errors import error_body
from chatsessions.service.metrics import Metrics
from chatsessions.service.routes.chats import NOT_FOUND
from chatsessions.service.schemas import MessagePublic

router = APIRouter(prefix="/chats/{chat_id}/messages", tags=["messages"])


def last_seen(last_event_id: str | None, after: int | None) -> int:
    """The number of the last event a client saw: ``?after``, else ``Last-Event-ID``
    (``<seq>:<n>`` or ``n``), else -1 (none)."""
    if after is not None:
        return after
    number = (last_event_id or "").rpartition(":")[2].strip()
    return int(number) if number.isdigit() else -1


@router.get("/{seq}/events", responses={
    **NOT_FOUND,
    200: {"content": {"text/event-stream": {}},
          "description": "the events after the last one seen, then live ones until the end"},
})
async def turn_events(
    chat_id: str,
    seq: int,
    sessions: SessionsDep,
    after: Annotated[int | None, Query(ge=-1, description="the last event number seen")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> sse.EventStream:
    """Resume the events of the turn whose answer is message ``seq``."""
    return await stream_steps(
        sessions.runs.follow(chat_id, seq, after=last_seen(last_event_id, after)), None)


async def stream_steps(steps: AsyncGenerator[Step, None],
                       metrics: Metrics | None) -> sse.EventStream:
    """Steps as events (``delta``, then ``done`` or ``error``); errors before the first
    step get their own HTTP status. ``metrics`` counts the turn (on its first stream)."""
    try:
        first = await anext(steps)
    except ChatSessionsError:
        if metrics is not None:
            metrics.turn_failed()
        await steps.aclose()
        raise
    return sse.EventStream(_events(first, steps, metrics),
                           first_ready=not isinstance(first.item, Message))


async def _events(first: Step, steps: AsyncGenerator[Step, None],
                  metrics: Metrics | None) -> AsyncIterator[bytes]:
    """Never a silent close: ``done`` or ``error`` ends every stream that ends. If the
    client goes away, only this reader stops: the turn goes on and is stored. A stored
    message followed by more steps is a tool round's (``tool_call``: an answer calling
    tools, ``tool_result``: an output); the last one is ``done``."""
    async with aclosing(steps):
        step = first
        last = step.index
        try:
            while True:
                id_ = f"{step.seq}:{step.index}"
                last = step.index
                item = step.item
                if isinstance(item, Message):
                    data: dict[str, Any] = MessagePublic.of(item).model_dump(mode="json")
                    following = await anext(steps, None)
                    if following is None:
                        if metrics is not None:
                            metrics.turn_ok(item)
                        yield sse.event("done", data, id_)
                        return
                    kind = "tool_result" if item.role is Role.TOOL else "tool_call"
                    yield sse.event(kind, data, id_)
                    step = following
                    continue
                if isinstance(item, ToolCallDelta):
                    yield sse.event("tool_call.delta", {
                        "index": item.index, "id": item.id, "name": item.name,
                        "arguments": item.arguments}, id_)
                else:
                    yield sse.event("delta", {"content": item}, id_)
                step = await anext(steps)
        except ChatSessionsError as exc:
            if metrics is not None:
                metrics.turn_failed()
            yield sse.event("error", error_body(exc.type, str(exc)), f"{first.seq}:{last + 1}")
