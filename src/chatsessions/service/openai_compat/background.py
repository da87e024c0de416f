"""/v1/responses beyond one request: ``background: true`` runs, their polling and cancel,
and streams resumed with ``GET /v1/responses/{id}?stream=true&starting_after=N``.

A background response's id is ``resp_<run id>`` (no ``_<seq>`` tail: it is issued before
its answer exists), backed by a run of the library (``sessions.runs``): any replica
answers a poll from the stored run, a cancel reaches the replica running it, a replica
that dies leaves it ``failed``. Once completed it is the stored answer like any other
response (``previous_response_id`` may name it). A background run is the foreground turn
run detached (``turns.py``): the same tools, tool outputs (a tool round), images, text
format and context policy; an answer that calls tools completes with ``function_call``
items, and a later request with their outputs goes on from it.

Resuming: a response's events are the same function of its turn's steps every time they
are built, so a reader is sent the rebuilt events numbered above ``starting_after``. On
the replica running the turn that is exact. Elsewhere, or once the turn's steps are
forgotten, the turn is read back from storage when it ends, its answer as one delta: a
reader that had seen part of it gets the closing events (each carries the whole text or
call), numbered on from ``starting_after``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, StreamingResponse

from chatsessions import (
    AsyncChatSessions,
    ChatSessionsError,
    Message,
    Run,
    RunNotFound,
    RunStatus,
    Step,
    ToolCallDelta,
)
from chatsessions.service import sse
from chatsessions.service.deps import SessionsDep
from chatsessions.service.openai_compat import turns
from chatsessions.service.openai_compat.errors import ERRORS, OpenAIRoute, bad_request, not_found
from chatsessions.service.openai_compat.items import (
    RESPONSE_PREFIX,
    output_items,
    parse_response_id,
)
from chatsessions.service.openai_compat.schemas import ResponseCreate, response_object
from chatsessions.service.openai_compat.streaming import SSE_HEADERS, now, response_events
from chatsessions.service.openai_compat.turns import Turn
from chatsessions.validation import MAX_METADATA_BYTES

#: events before the first delta: created, in_progress, output_item.added, part.added
HEADER_EVENTS = 4
#: the events a reader that has seen deltas is not sent again from a rebuilt turn: those
#: that open the response or an item, and the deltas (the closing events carry it all)
OPENING = ("response.created", "response.in_progress", ".added", ".delta")
#: the request's fields echoed in a background Response (its input is not kept twice)
ECHOED = ("model", "instructions", "previous_response_id", "temperature", "top_p",
          "max_output_tokens", "metadata", "background", "store", "tools", "tool_choice",
          "parallel_tool_calls", "text", "truncation")
#: echoed fields that may be large (schemas), left out of an echo bigger than ECHO_BYTES
BULKY = ("tools", "text")
#: the room an echo may take in a run's metadata (the rest: its creation time)
ECHO_BYTES = MAX_METADATA_BYTES - 1024


def run_id_of(response_id: str) -> str | None:
    """The run behind a background response id, or None for another kind of id."""
    rest = response_id.removeprefix(RESPONSE_PREFIX)
    if rest == response_id or "_" in rest or not rest.isalnum():
        return None
    return rest


async def resolve(sessions: AsyncChatSessions, response_id: str) -> tuple[str, int] | None:
    """(chat id, answer seq) of a response: from its id, or from its run once that has
    started its turn (None: not one of ours, or no answer yet)."""
    parsed = parse_response_id(response_id)
    run_id = run_id_of(response_id)
    if parsed is not None or run_id is None:
        return parsed
    try:
        run = await sessions.runs.get(run_id)
    except RunNotFound:
        return None
    return None if run.seq is None or run.status is not RunStatus.COMPLETED else (
        run.chat_id, run.seq)


router = APIRouter(prefix="/responses", route_class=OpenAIRoute, responses=ERRORS, tags=["openai"])


@router.post("/{response_id}/cancel")
async def cancel_response(response_id: str, sessions: SessionsDep) -> dict[str, Any]:
    """Cancel a background response: its model call stops, its turn is marked failed."""
    return await cancel(sessions, response_id)


def starting_after(value: str | None) -> int:
    if value is None:
        return -1
    if not value.isdigit():
        raise bad_request("'starting_after' must be a sequence number.", "starting_after")
    return int(value)


# background: create, retrieve, cancel ----------------------------------------------------

async def start(body: ResponseCreate, sessions: AsyncChatSessions, chat_id: str, turn: Turn,
                expected: int | None, created: float) -> Response:
    """Start the turn (or tool round) in the background and answer at once with the
    ``queued`` Response (or with ``stream``: its events, as a resumed stream from the
    start)."""
    run = await turns.start(sessions, chat_id, turn, expected,
                            {"request": echo(body), "created_at": created})
    if body.stream:
        return await resume(sessions, RESPONSE_PREFIX + run.id, -1)
    return JSONResponse(await run_response(sessions, run))


def echo(body: ResponseCreate) -> dict[str, Any]:
    """The request's settings a background Response shows, kept with its run: all of
    ``ECHOED``, less the tools and text format if they would not fit in a run's metadata
    (a retrieved foreground Response does not show them either)."""
    kept = body.model_dump(mode="json", include=set(ECHOED), exclude_none=True)
    size = len(json.dumps(kept, ensure_ascii=False).encode())
    if size > ECHO_BYTES:
        kept = {key: value for key, value in kept.items() if key not in BULKY}
    return kept


async def retrieve(sessions: AsyncChatSessions, run_id: str) -> dict[str, Any]:
    return await run_response(sessions, await _run(sessions, run_id))


async def cancel(sessions: AsyncChatSessions, response_id: str) -> dict[str, Any]:
    """Cancel a background response; others were never cancellable (400)."""
    run_id = run_id_of(response_id)
    if run_id is None:
        if parse_response_id(response_id) is None:
            raise not_found(f"Response with id '{response_id}' not found.", "response_id")
        raise bad_request("Only responses created with background=true can be cancelled.",
                          "response_id")
    await _run(sessions, run_id)
    return await run_response(sessions, await sessions.runs.cancel(run_id))


async def _run(sessions: AsyncChatSessions, run_id: str) -> Run:
    try:
        return await sessions.runs.get(run_id)
    except RunNotFound:
        raise not_found(f"Response with id '{RESPONSE_PREFIX}{run_id}' not found.",
                        "response_id") from None


async def run_response(sessions: AsyncChatSessions, run: Run) -> dict[str, Any]:
    """The Response object of a background run, as it stands."""
    request = ResponseCreate(input="", **run.metadata.get("request", {}))
    created = float(run.metadata.get("created_at") or int(run.created_at.timestamp()))
    answer = None
    if run.status is RunStatus.COMPLETED and run.seq is not None:
        answer = await sessions.get_message(run.chat_id, run.seq)
    error = None
    if run.status is RunStatus.FAILED:
        error = {"code": "server_error", "message": run.error or "failed"}
    return response_object(
        id_=RESPONSE_PREFIX + run.id, created_at=created,
        model=(answer.model if answer else None) or request.model or "",
        status=run.status.value,
        output=output_items(answer.seq, answer.content, answer.tool_calls or ()) if answer
        else [],
        usage=answer.usage if answer else None, request=request, conversation_id=run.chat_id,
        error=error, completed_at=float(int(answer.created_at.timestamp())) if answer else None)


# resumed streams ------------------------------------------------------------------------

async def resume(sessions: AsyncChatSessions, response_id: str, after: int) -> Response:
    """The response's events numbered above ``after``, then live ones to the end."""
    run_id = run_id_of(response_id)
    request = ResponseCreate(input="")
    chat_id: str | None = None
    if run_id is not None:
        run = await _run(sessions, run_id)
        request = ResponseCreate(input="", **run.metadata.get("request", {}))
        chat_id = run.chat_id
        steps = sessions.runs.follow_run(run_id)
    else:
        parsed = parse_response_id(response_id)
        if parsed is None:
            raise not_found(f"Response with id '{response_id}' not found.", "response_id")
        chat_id = parsed[0]
        steps = sessions.runs.follow(*parsed)
    try:
        first = await anext(steps)
    except RunNotFound:
        await steps.aclose()
        raise not_found(f"Response with id '{response_id}' not found.", "response_id") from None
    except BaseException:
        await steps.aclose()
        raise
    created = now()

    def snapshot(status: str, output: list[dict[str, Any]], final: Any,
                 error: dict[str, Any] | None) -> dict[str, Any]:
        return response_object(
            id_=response_id, created_at=created,
            model=(final.model if final is not None else None) or request.model or "",
            status=status, output=output,  # type: ignore[arg-type]
            usage=None if final is None else final.usage, request=request,
            conversation_id=chat_id, error=error,
            completed_at=now() if status == "completed" else None)

    events = response_events(str(first.seq), first.item, _items(steps), snapshot)
    return StreamingResponse(_after(events, after, rebuilt=first.rebuilt),
                             media_type="text/event-stream", headers=SSE_HEADERS)


async def _items(steps: AsyncGenerator[Step, None]
                 ) -> AsyncIterator[str | ToolCallDelta | Message]:
    async with aclosing(steps):
        async for step in steps:
            yield step.item


async def _after(events: AsyncIterator[bytes], after: int, *,
                 rebuilt: bool) -> AsyncIterator[bytes]:
    """The events numbered above ``after``; for a turn rebuilt from storage when the
    reader had seen deltas, the closing events only, renumbered on from ``after``."""
    number = after
    try:
        async for chunk in events:
            kind, data = _parse(chunk)
            if not (rebuilt and after >= HEADER_EVENTS):
                if data["sequence_number"] > after:
                    yield chunk
                continue
            if kind.endswith(OPENING):
                continue
            number += 1
            yield sse.event(kind, {**data, "sequence_number": number})
    except ChatSessionsError:  # response_events reports failures itself; this is a guard
        return


def _parse(chunk: bytes) -> tuple[str, dict[str, Any]]:
    head, _, rest = chunk.decode().partition("\n")
    data: dict[str, Any] = json.loads(rest.removeprefix("data: ").strip())
    return head.removeprefix("event: "), data

