"""/chats: create, list (cursor paging, filters), read, update, delete, export."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from chatsessions import InvalidInput
from chatsessions.service.deps import IdempotencyKey, SessionsDep
from chatsessions.service.schemas import ChatCreate, ChatList, ChatPublic, ChatUpdate, ErrorBody

router = APIRouter(prefix="/chats", tags=["chats"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such chat"},
}


def encode_cursor(created_at: datetime, chat_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), chat_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, chat_id = json.loads(raw)
        return datetime.fromisoformat(created), str(chat_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidInput("cursor is not one this service gave out") from exc


@router.post("", status_code=201, response_model=ChatPublic,
             responses={422: {"model": ErrorBody}})
async def create_chat(
    body: ChatCreate, sessions: SessionsDep, idempotency_key: IdempotencyKey = None
) -> ChatPublic:
    """Start a chat; its history begins with the system prompt."""
    chat_id = await sessions.create_chat(
        body.system_prompt, model=body.model, params=body.params, title=body.title,
        metadata=body.metadata, idempotency_key=idempotency_key, expires_at=body.expires_at,
        context_policy=body.context_policy,
        tools=None if body.tools is None else [tool.spec() for tool in body.tools],
        tool_choice=body.tool_choice,
    )
    return ChatPublic.of(await sessions.get_chat(chat_id))


@router.get("", response_model=ChatList, responses={422: {"model": ErrorBody}})
async def list_chats(
    request: Request,
    sessions: SessionsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    title: Annotated[str | None, Query(max_length=500,
                                       description="only chats whose title contains this")] = None,
    archived: Annotated[Literal["false", "true", "all"], Query(
        description="false: active chats only; true: archived ones only; all: both")] = "false",
) -> ChatList:
    """Newest first. Filter by metadata with `?metadata.KEY=VALUE` (values compared as JSON
    when they parse, else as strings)."""
    metadata = {
        key.removeprefix("metadata."): _json_or_text(value)
        for key, value in request.query_params.items()
        if key.startswith("metadata.")
    }
    before = decode_cursor(cursor) if cursor else None
    chats = await sessions.list_chats(limit=limit, before=before, title_contains=title,
                                      metadata=metadata or None, include_archived=True,
                                      archived=None if archived == "all" else archived == "true")
    next_cursor = encode_cursor(chats[-1].created_at, chats[-1].id) if len(chats) == limit else None
    return ChatList(data=[ChatPublic.of(c) for c in chats], next_cursor=next_cursor)


@router.get("/{chat_id}", response_model=ChatPublic, responses=NOT_FOUND)
async def get_chat(chat_id: str, sessions: SessionsDep) -> ChatPublic:
    return ChatPublic.of(await sessions.get_chat(chat_id))


@router.patch("/{chat_id}", response_model=ChatPublic,
              responses={**NOT_FOUND, 422: {"model": ErrorBody}})
async def update_chat(chat_id: str, body: ChatUpdate, sessions: SessionsDep) -> ChatPublic:
    """Change only the fields sent."""
    changes = body.model_dump(exclude_unset=True)
    for field in ("system_prompt", "model", "params", "metadata", "context_policy"):
        if field in changes and changes[field] is None:
            raise InvalidInput(f"{field} cannot be null")
    if body.params is not None:
        changes["params"] = body.params
    return ChatPublic.of(await sessions.update_chat(chat_id, **changes))


@router.delete("/{chat_id}", status_code=204, response_class=Response, responses=NOT_FOUND)
async def delete_chat(chat_id: str, sessions: SessionsDep) -> Response:
    """Delete the chat and all its messages, for real."""
    await sessions.delete_chat(chat_id)
    return Response(status_code=204)


@router.post("/{chat_id}/archive", response_model=ChatPublic, responses=NOT_FOUND)
async def archive_chat(chat_id: str, sessions: SessionsDep) -> ChatPublic:
    """Hide the chat from the list (see `?archived=`); it stays readable and usable."""
    return ChatPublic.of(await sessions.archive_chat(chat_id))


@router.post("/{chat_id}/unarchive", response_model=ChatPublic, responses=NOT_FOUND)
async def unarchive_chat(chat_id: str, sessions: SessionsDep) -> ChatPublic:
    return ChatPublic.of(await sessions.unarchive_chat(chat_id))


@router.get("/{chat_id}/export", responses={
    **NOT_FOUND,
    200: {"content": {"application/json": {}, "text/markdown": {}},
          "description": "the chat as a lossless JSON document or as Markdown"},
})
async def export_chat(
    chat_id: str,
    sessions: SessionsDep,
    format: Literal["json", "markdown"] = "json",
) -> Response:
    """JSON is lossless and `POST /chats/import` takes it back; Markdown is for reading."""
    disposition = {"Content-Disposition": f'attachment; filename="chat-{chat_id}.'
                   f'{"md" if format == "markdown" else "json"}"'}
    if format == "json":
        return JSONResponse(await sessions.export_chat(chat_id), headers=disposition)
    return PlainTextResponse(await sessions.export_markdown(chat_id), media_type="text/markdown",
                             headers=disposition)


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value
