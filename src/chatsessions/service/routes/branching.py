"""Branches of a chat: fork it, edit a user message (in a fork), regenerate the last
answer (keeping the earlier one), retry a failed turn."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Request

from chatsessions.service import sse
from chatsessions.service.deps import SessionsDep
from chatsessions.service.metrics import Metrics
from chatsessions.service.routes.chats import NOT_FOUND
from chatsessions.service.routes.messages import (
    TURN_ERRORS,
    counted,
    run_counted,
    stream_response,
)
from chatsessions.service.schemas import (
    ChatPublic,
    EditPublic,
    ErrorBody,
    ForkCreate,
    MessageEdit,
    MessagePublic,
    TurnAgain,
)

router = APIRouter(prefix="/chats/{chat_id}", tags=["branches"])

STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}},
          "description": "the stored assistant message, or with `stream`: SSE events "
                         "`delta` {content}, then `done` (the message) or `error`"},
}


@router.post("/fork", status_code=201, response_model=ChatPublic, responses={
    **NOT_FOUND,
    422: {"model": ErrorBody, "description": "up_to_seq beyond the chat's messages"},
})
async def fork_chat(
    chat_id: str, sessions: SessionsDep, body: Annotated[ForkCreate | None, Body()] = None
) -> ChatPublic:
    """A new chat with this one's settings and a copy of its ok messages up to `up_to_seq`
    (all of them when absent); `parent_id` names this chat. This chat is not changed."""
    fork_id = await sessions.fork_chat(chat_id, up_to_seq=body.up_to_seq if body else None)
    return ChatPublic.of(await sessions.get_chat(fork_id))


@router.post("/regenerate", response_model=MessagePublic, responses={
    **TURN_ERRORS,
    **STREAMED,
    422: {"model": ErrorBody, "description": "nothing to regenerate, or bad params"},
    502: {"model": ErrorBody, "description": "the model failed; the chat is unchanged"},
})
async def regenerate(
    chat_id: str,
    request: Request,
    sessions: SessionsDep,
    body: Annotated[TurnAgain | None, Body()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """Answer the last user message again. The earlier answer is kept, marked `replaced`
    (the model no longer sees it); the new one names it in `replaces_seq`. If the model
    fails, nothing changes."""
    body = body or TurnAgain()
    metrics: Metrics = request.app.state.metrics
    if sse.wants_stream(accept, body.stream):
        return await stream_response(
            sessions.stream_regenerate(chat_id, params=body.params), metrics)
    return counted(metrics, await run_counted(metrics, sessions.regenerate(chat_id,
                                                                     params=body.params)))


@router.post("/retry", response_model=MessagePublic, responses={
    **TURN_ERRORS,
    **STREAMED,
    409: {"model": ErrorBody, "description": "busy, or another turn came first"},
    422: {"model": ErrorBody, "description": "nothing to retry, or bad params"},
})
async def retry(
    chat_id: str,
    request: Request,
    sessions: SessionsDep,
    body: Annotated[TurnAgain | None, Body()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """Ask the last user message again if its turn failed: a new turn with the same text
    (the failed one stays in the history, marked failed)."""
    body = body or TurnAgain()
    metrics: Metrics = request.app.state.metrics
    if sse.wants_stream(accept, body.stream):
        return await stream_response(
            sessions.stream_retry(chat_id, params=body.params), metrics)
    return counted(metrics, await run_counted(metrics, sessions.retry(chat_id, params=body.params)))


@router.post("/messages/{seq}/edit", status_code=201, response_model=EditPublic, responses={
    **TURN_ERRORS,
    422: {"model": ErrorBody, "description": "not a user message of this chat, empty or "
                                            "oversized content, bad params"},
    502: {"model": ErrorBody, "description": "the model failed; the new chat keeps the "
                                            "edited message, marked failed (`chat_id`)"},
})
async def edit_message(
    chat_id: str,
    seq: Annotated[int, Path(ge=1, description="the user message to edit")],
    body: MessageEdit,
    request: Request,
    sessions: SessionsDep,
) -> EditPublic:
    """Ask `content` instead of user message `seq`, in a new chat forked just before it;
    returns that chat and its answer. This chat is not changed."""
    metrics: Metrics = request.app.state.metrics
    fork_id, answer = await run_counted(metrics, sessions.edit_message(
        chat_id, seq, body.content, params=body.params))
    metrics.turn_ok(answer)
    return EditPublic(chat=ChatPublic.of(await sessions.get_chat(fork_id)),
                      answer=MessagePublic.of(answer))
