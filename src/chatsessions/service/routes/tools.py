"""/chats/{id}/tool-results and /chats/{id}/tool-calls: the outputs of the calls an
answer made (JSON or Server-Sent Events, like a turn), the calls still waiting, and
cancelling them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from chatsessions import InvalidInput
from chatsessions.service import sse
from chatsessions.service.deps import IdempotencyKey, SessionsDep
from chatsessions.service.metrics import Metrics
from chatsessions.service.routes.chats import NOT_FOUND
from chatsessions.service.routes.messages import (
    TURN_ERRORS,
    counted,
    run_counted,
    stream_response,
)
from chatsessions.service.schemas import (
    MessagePublic,
    PendingToolCalls,
    ToolCallPublic,
    ToolCallsCancel,
    ToolResultsCreate,
)

router = APIRouter(prefix="/chats/{chat_id}", tags=["tools"])


@router.post("/tool-results", response_model=MessagePublic, responses={
    **TURN_ERRORS,
    200: {"content": {"text/event-stream": {}},
          "description": "the model's next stored answer (it may call tools again), or "
                         "with `stream`: SSE events `delta`, `tool_call.delta`, then "
                         "`tool_result` (each output, stored with the answer) and `done`, "
                         "or `error`"},
})
async def send_tool_results(
    chat_id: str,
    body: ToolResultsCreate,
    request: Request,
    sessions: SessionsDep,
    accept: Annotated[str | None, Header()] = None,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Store the outputs of every call the chat waits for, then ask the model again.
    Unknown or missing call ids: 422 naming them. A repeated `Idempotency-Key` gives the
    stored answer."""
    metrics: Metrics = request.app.state.metrics
    results = {result.tool_call_id: result.output for result in body.results}
    if len(results) != len(body.results):
        await sessions.get_chat(chat_id)  # an unknown chat is a 404 first, as everywhere
        raise InvalidInput("two results have the same tool_call_id")
    options: dict[str, Any] = {
        "params": body.params, "idempotency_key": idempotency_key,
        "tools": None if body.tools is None else [tool.spec() for tool in body.tools],
        "tool_choice": body.tool_choice, "parallel_tool_calls": body.parallel_tool_calls}
    if sse.wants_stream(accept, body.stream):
        return await stream_response(
            sessions.stream_tool_results(chat_id, results, **options), metrics)
    return counted(metrics, await run_counted(metrics, sessions.send_tool_results(
        chat_id, results, **options)))


@router.get("/tool-calls", response_model=PendingToolCalls, responses=NOT_FOUND)
async def pending_tool_calls(chat_id: str, sessions: SessionsDep) -> PendingToolCalls:
    """The calls of the chat's last answer still without an output."""
    calls = await sessions.pending_tool_calls(chat_id)
    return PendingToolCalls(data=[ToolCallPublic.of(call) for call in calls])


@router.post("/tool-calls/cancel", response_model=PendingToolCalls, responses=NOT_FOUND)
async def cancel_tool_calls(chat_id: str, body: ToolCallsCancel,
                            sessions: SessionsDep) -> PendingToolCalls:
    """Give pending calls (default: all) a cancelled output, so the chat can go on."""
    calls = await sessions.cancel_tool_calls(chat_id, body.call_ids)
    return PendingToolCalls(data=[ToolCallPublic.of(call) for call in calls])
