"""/chats/import: a chat from a JSON export or an OpenAI-style messages list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from chatsessions.service.deps import SessionsDep
from chatsessions.service.schemas import ChatPublic, ErrorBody, ImportBody

router = APIRouter(prefix="/chats", tags=["chats"])

IMPORT_BODY = (
    'A chatsessions export (`GET /chats/{id}/export`, an object with `"format"`), a list of '
    '`{"role": "system"|"user"|"assistant", "content": "..."}` messages (a leading system '
    'message becomes the system prompt), or `{"messages": [...], "title": "..."}`. Rules the '
    "schema cannot state: an export's message seqs are unique and at most "
    "`chat.message_count`, and `chat.forked_at_seq` is at most `chat.message_count`."
)


@router.post("/import", status_code=201, response_model=ChatPublic, responses={
    409: {"model": ErrorBody, "description": "keep_id: a chat with that id already exists"},
    422: {"model": ErrorBody, "description": "the document is malformed; nothing was stored"},
})
async def import_chat(
    sessions: SessionsDep,
    document: Annotated[ImportBody, Body(description=IMPORT_BODY)],
    keep_id: Annotated[bool, Query(
        description="keep the export's chat id (409 if it is taken) instead of a new one; "
                    "only for an export with a chat.id")
    ] = False,
) -> ChatPublic:
    """Store a chat as exported (seqs, statuses, times and counters kept; a new id unless
    `keep_id`) or from a messages list; all or nothing."""
    chat_id = await sessions.import_chat(document, keep_id=keep_id)
    return ChatPublic.of(await sessions.get_chat(chat_id))
