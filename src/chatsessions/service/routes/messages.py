"""/chats/{id}/messages: run a turn (JSON or Server-Sent Events) and page the history."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import aclosing
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from chatsessions import ChatSessionsError, Message, Role, ToolCallDelta
from chatsessions.service import sse
from chatsessions.service.deps import IdempotencyKey, SessionsDep
from chatsessions.service.errors import error_body
from chatsessions.service.metrics import Metrics
from chatsessions.service.routes.chats import NOT_FOUND
from chatsessions.service.routes.turn_events import stream_steps
from chatsessions.service.schemas import ErrorBody, MessageCreate, MessageList, MessagePublic

T = TypeVar("T")

router = APIRouter(prefix="/chats/{chat_id}/messages", tags=["messages"])

TURN_ERRORS: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    409: {"model": ErrorBody, "description": "the chat is busy with another turn, or "
                                             "waits for tool outputs (tool_calls_pending: "
                                             "the message names the calls)"},
    422: {"model": ErrorBody, "description": "empty or oversized content, bad params, or "
                                             "too long for the context window "
                                             "(context_too_long; nothing is stored)"},
    502: {"model": ErrorBody, "description": "the model failed; the message is kept"},
    503: {"model": ErrorBody, "description": "the model backend is unavailable"},
    504: {"model": ErrorBody, "description": "the model did not answer in time"},
}


@router.post("", response_model=MessagePublic, responses={
    **TURN_ERRORS,
    200: {"content": {"text/event-stream": {}},
          "description": "the stored assistant message (it may hold `tool_calls`: the "
                         "chat then waits for POST .../tool-results), or with `stream`: "
                         "SSE events `delta` {content} and `tool_call.delta` {index, id, "
                         "name, arguments}, `tool_call` and `tool_result` (the stored "
                         "messages of a tool round), then `done` (the message) or `error`, "
                         "each with an id `<seq>:<n>` to resume from (see the turn's "
                         "events)"},
})
async def send_message(
    chat_id: str,
    body: MessageCreate,
    request: Request,
    sessions: SessionsDep,
    accept: Annotated[str | None, Header()] = None,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Send a user message with the whole history; get the assistant's answer."""
    metrics: Metrics = request.app.state.metrics
    tools = None if body.tools is None else [tool.spec() for tool in body.tools]
    options: dict[str, Any] = {
        "params": body.params, "idempotency_key": idempotency_key, "tools": tools,
        "tool_choice": body.tool_choice, "parallel_tool_calls": body.parallel_tool_calls,
        "response_format": body.response_format, "context_policy": body.context_policy}
    if sse.wants_stream(accept, body.stream):  # resumable: see turn_events.py
        return await stream_steps(sessions.runs.stream(chat_id, body.content, **options),
                                  metrics)
    return counted(metrics, await run_counted(metrics, sessions.send(
        chat_id, body.content, **options)))


async def run_counted(metrics: Metrics, call: Awaitable[T]) -> T:
    """Await a turn, counting its failure."""
    try:
        return await call
    except ChatSessionsError:
        metrics.turn_failed()
        raise


def counted(metrics: Metrics, answer: Message) -> Response:
    """Count an answered turn and give its public form, serialized once. Returned as a
    model, it would be dumped, validated again against the route's response model and
    serialized (a tenth of the service's own work on a turn); the route's
    ``response_model`` still documents it."""
    metrics.turn_ok(answer)
    return Response(MessagePublic.of(answer).model_dump_json(), media_type="application/json")


async def stream_response(
    turn: AsyncGenerator[str | ToolCallDelta | Message, None], metrics: Metrics
) -> sse.EventStream:
    """A turn as Server-Sent Events; errors before any output get their own status."""
    try:
        first = await anext(turn)
    except ChatSessionsError:
        metrics.turn_failed()
        await turn.aclose()
        raise
    return sse.EventStream(_events(first, turn, metrics),
                           first_ready=not isinstance(first, Message))


async def _events(
    first: str | ToolCallDelta | Message,
    turn: AsyncGenerator[str | ToolCallDelta | Message, None], metrics: Metrics,
) -> AsyncIterator[bytes]:
    """Deltas and call pieces, each stored message before the last (`tool_call`: an
    answer that calls tools, `tool_result`: a tool's output), then `done` with the last
    stored message, or an `error` event: never a silent close. If the client goes away,
    the turn is cancelled and recorded as failed."""
    async with aclosing(turn):
        item = first
        try:
            while True:
                if isinstance(item, Message):
                    stored = MessagePublic.of(item).model_dump(mode="json")
                    following = await anext(turn, None)
                    if following is None:
                        metrics.turn_ok(item)
                        yield sse.event("done", stored)
                        return
                    kind = "tool_result" if item.role is Role.TOOL else "tool_call"
                    yield sse.event(kind, stored)
                    item = following
                    continue
                if isinstance(item, ToolCallDelta):
                    yield sse.event("tool_call.delta", {
                        "index": item.index, "id": item.id, "name": item.name,
                        "arguments": item.arguments})
                else:
                    yield sse.event("delta", {"content": item})
                item = await anext(turn)
        except ChatSessionsError as exc:
            metrics.turn_failed()
            yield sse.event("error", error_body(exc.type, str(exc)))


@router.get("", response_model=MessageList, responses=NOT_FOUND)
async def list_messages(
    chat_id: str,
    sessions: SessionsDep,
    after: Annotated[int, Query(ge=0, description="only messages with seq > after")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> MessageList:
    """Stored messages in order, failed turns included (the system prompt is on the chat)."""
    rows = await sessions.messages(chat_id, after_seq=after, limit=limit)
    next_after = rows[-1].seq if len(rows) == limit else None
    return MessageList(data=[MessagePublic.of(m) for m in rows], next_after=next_after)
