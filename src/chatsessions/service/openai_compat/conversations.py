"""/v1/conversations and their items, stored as chats and messages.

A conversation *is* a chat (same id, also served by ``/chats``): its metadata is the chat's
metadata, its items are the chat's ok messages (an answer's tool calls and the tool
outputs as ``function_call`` and ``function_call_output`` items), and system or developer
items given at creation become the chat's system prompt.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from chatsessions import AsyncChatSessions, Chat, ChatNotFound, Message, TurnStatus
from chatsessions.service.deps import SessionsDep
from chatsessions.service.openai_compat.errors import (
    ERRORS,
    OpenAIRoute,
    not_found,
)
from chatsessions.service.openai_compat.items import (
    ITEM_ID,
    Row,
    item_list,
    message_items,
    page,
    parse_input,
    parse_item_id,
    rows_of,
    split_system,
)
from chatsessions.service.openai_compat.schemas import (
    ConversationCreate,
    ConversationUpdate,
    ItemsCreate,
    conversation_object,
)

router = APIRouter(prefix="/conversations", route_class=OpenAIRoute, responses=ERRORS,
                   tags=["openai"])


async def get_conversation(sessions: AsyncChatSessions, conversation_id: str,
                           param: str | None = None) -> Chat:
    """The caller's chat with this id; another tenant's is as unknown as a missing one."""
    try:
        return await sessions.get_chat(conversation_id)
    except ChatNotFound:
        raise not_found(f"Conversation with id '{conversation_id}' not found.", param) from None


async def append_rows(sessions: AsyncChatSessions, chat_id: str,
                      rows: list[Row]) -> list[Message]:
    """Store ``rows`` as they are, without asking the model (their text, calls and ids
    are the library's to check, as it does for every message)."""
    if not rows:
        return []
    return await sessions.append_messages(chat_id, [row.as_chat() for row in rows])


@router.post("")
async def create_conversation(body: ConversationCreate, sessions: SessionsDep) -> dict[str, Any]:
    """A new chat; leading system/developer items become its system prompt."""
    body.refuse_unknown()
    system_prompt, rest = split_system(parse_input(body.items or [], "items"), "items")
    rows = rows_of(rest, "items", start=len(body.items or []) - len(rest))
    chat_id = await sessions.create_chat(system_prompt, metadata=body.metadata)
    try:
        await append_rows(sessions, chat_id, rows)
    except BaseException:
        await sessions.delete_chat(chat_id)
        raise
    return conversation_object(await sessions.get_chat(chat_id))


@router.get("/{conversation_id}")
async def retrieve_conversation(conversation_id: str, sessions: SessionsDep) -> dict[str, Any]:
    return conversation_object(await get_conversation(sessions, conversation_id))


@router.post("/{conversation_id}")
async def update_conversation(conversation_id: str, body: ConversationUpdate,
                              sessions: SessionsDep) -> dict[str, Any]:
    """Replace the conversation's metadata."""
    body.refuse_unknown()
    await get_conversation(sessions, conversation_id)
    return conversation_object(await sessions.update_chat(conversation_id,
                                                          metadata=body.metadata))


@router.delete("/{conversation_id}")
async def delete_conversation(conversation_id: str, sessions: SessionsDep) -> dict[str, Any]:
    """Delete the chat and all its messages, for real."""
    await get_conversation(sessions, conversation_id)
    await sessions.delete_chat(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.post("/{conversation_id}/items")
async def create_items(conversation_id: str, body: ItemsCreate,
                       sessions: SessionsDep) -> dict[str, Any]:
    """Append messages, function calls and their outputs as they are, without asking the
    model."""
    body.refuse_unknown()
    rows = rows_of(parse_input(body.items, "items"), "items")
    await get_conversation(sessions, conversation_id)
    added = await append_rows(sessions, conversation_id, rows)
    return item_list([item for m in added for item in message_items(m)])


@router.get("/{conversation_id}/items")
async def list_items(
    conversation_id: str,
    sessions: SessionsDep,
    after: Annotated[str | None, Query(pattern=ITEM_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The conversation's messages (what the model sees), newest first by default."""
    await get_conversation(sessions, conversation_id)
    return page(await visible_messages(sessions, conversation_id), after=after, limit=limit,
                order=order)


@router.get("/{conversation_id}/items/{item_id}")
async def retrieve_item(conversation_id: str, item_id: str,
                        sessions: SessionsDep) -> dict[str, Any]:
    await get_conversation(sessions, conversation_id)
    message = await find_item(sessions, conversation_id, item_id)
    return next(item for item in message_items(message) if item["id"] == item_id)


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, sessions: SessionsDep) -> dict[str, Any]:
    """Remove one message from the history (a function call's item: the whole answer
    that made it); answers with the conversation."""
    await get_conversation(sessions, conversation_id)
    message = await find_item(sessions, conversation_id, item_id)
    if not await sessions.delete_message(conversation_id, message.seq):
        raise _item_not_found(item_id)
    return conversation_object(await get_conversation(sessions, conversation_id))


async def visible_messages(sessions: AsyncChatSessions, chat_id: str) -> list[Message]:
    """The chat's ok messages in order, without the system prompt."""
    return (await sessions.history(chat_id))[1:]


async def find_item(sessions: AsyncChatSessions, chat_id: str, item_id: str) -> Message:
    seq = parse_item_id(item_id)
    if seq is not None and seq > 0:
        found = await sessions.get_message(chat_id, seq)
        if found is not None and found.status is TurnStatus.OK and any(
                item["id"] == item_id for item in message_items(found)):
            return found
    raise _item_not_found(item_id)


def _item_not_found(item_id: str) -> Exception:
    return not_found(f"Item with id '{item_id}' not found.", "item_id")
