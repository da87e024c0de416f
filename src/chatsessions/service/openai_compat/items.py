"""Conversation items and ids: OpenAI's message items mapped onto stored messages.

Nothing beyond chats and messages is stored, so ids encode what they point at:

* conversation id = the chat id (the same chat is served by ``/chats``);
* item id = ``msg_<seq>`` (unique within its conversation, as the items API addresses it);
* response id = ``resp_<chat id>_<seq of the answer>``.

Only text is carried: a message's content is a string or a list of text parts; images,
files, audio, tool calls and other item types are refused with a 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from chatsessions.service.openai_compat.errors import bad_request, unsupported
from chatsessions.types import Message, Role, TurnStatus

ITEM_PREFIX = "msg_"
ITEM_ID = r"^msg_[0-9]{1,9}$"
RESPONSE_PREFIX = "resp_"
TEXT_PARTS = ("input_text", "output_text", "text")
INPUT_ROLES = ("user", "assistant", "system", "developer")


@dataclass(frozen=True, slots=True)
class InputMessage:
    """One text message from a request; ``developer`` counts as ``system``."""

    role: Literal["user", "assistant", "system"]
    text: str


def item_id(seq: int) -> str:
    return f"{ITEM_PREFIX}{seq}"


def parse_item_id(value: str) -> int | None:
    digits = value.removeprefix(ITEM_PREFIX)
    if value.startswith(ITEM_PREFIX) and digits.isdigit() and len(digits) < 10:
        return int(digits)
    return None


def response_id_for(chat_id: str, seq: int) -> str:
    return f"{RESPONSE_PREFIX}{chat_id}_{seq}"


def parse_response_id(value: str) -> tuple[str, int] | None:
    """(chat id, seq of the answer), or None if this is not one of our response ids."""
    chat_id, _, seq = value.removeprefix(RESPONSE_PREFIX).rpartition("_")
    if not value.startswith(RESPONSE_PREFIX) or not chat_id or not seq.isdigit() or len(seq) > 9:
        return None
    return chat_id, int(seq)


def timestamp(value: datetime) -> int:
    return int(value.timestamp())


# requests -------------------------------------------------------------------------------

def content_text(content: Any, param: str) -> str:
    """A message's text: a string, or text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("A message's content must be a string or a list of content parts.",
                          param)
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise bad_request("A content part must be an object with a 'type'.", where)
        kind = part.get("type")
        if kind not in TEXT_PARTS:
            raise unsupported(f"{where}.type",
                              f"Content parts of type '{kind}' are not supported")
        text = part.get("text")
        if not isinstance(text, str):
            raise bad_request("A text content part needs a string 'text'.", f"{where}.text")
        texts.append(text)
    return "\n".join(texts)


def parse_input(items: Any, param: str) -> list[InputMessage]:
    """``input``/``items`` as text messages: a string is one user message."""
    if isinstance(items, str):
        return [InputMessage("user", items)]
    if not isinstance(items, list):
        raise bad_request("Expected a string or a list of input items.", param)
    parsed = []
    for index, item in enumerate(items):
        where = f"{param}[{index}]"
        if not isinstance(item, dict):
            raise bad_request("An input item must be an object.", where)
        kind = item.get("type", "message")
        if kind != "message":
            raise unsupported(f"{where}.type", f"Input items of type '{kind}' are not supported")
        role = item.get("role")
        if role not in INPUT_ROLES:
            raise bad_request(f"Unsupported role {role!r}: expected one of "
                              f"{', '.join(INPUT_ROLES)}.", f"{where}.role")
        text = content_text(item.get("content"), f"{where}.content")
        parsed.append(InputMessage("system" if role in ("system", "developer") else role, text))
    return parsed


def split_system(messages: list[InputMessage],
                 param: str) -> tuple[str | None, list[InputMessage]]:
    """Leading system/developer messages joined into one prompt, and the rest; a system
    message later on is refused, as it would have no place in a stored history."""
    count = 0
    while count < len(messages) and messages[count].role == "system":
        count += 1
    rest = messages[count:]
    for index, message in enumerate(rest, count):
        if message.role == "system":
            raise bad_request("System and developer messages are only accepted before the "
                              "first user or assistant message.", f"{param}[{index}].role")
    prompt = "\n\n".join(m.text for m in messages[:count]) if count else None
    return prompt, rest


# responses ------------------------------------------------------------------------------

def message_item(message: Message) -> dict[str, Any]:
    """A stored message as a conversation item."""
    status = "completed" if message.status is TurnStatus.OK else "incomplete"
    if message.role is Role.ASSISTANT:
        return output_message(item_id(message.seq), message.content, status)
    return {"id": item_id(message.seq), "type": "message", "role": message.role.value,
            "status": status, "content": [{"type": "input_text", "text": message.content}]}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def output_message(id_: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """An assistant message item; ``text=None`` gives the empty item a stream starts with."""
    content = [] if text is None else [output_text(text)]
    return {"id": id_, "type": "message", "role": "assistant", "status": status,
            "content": content}


def item_list(items: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {
        "object": "list", "data": items, "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }


def page(messages: list[Message], *, after: str | None, limit: int,
         order: Literal["asc", "desc"]) -> dict[str, Any]:
    """Cursor paging by item id over messages in seq order, as OpenAI's lists page."""
    rows = messages if order == "asc" else messages[::-1]
    if after is not None:
        seq = parse_item_id(after)
        if seq is None:
            raise bad_request(f"Invalid 'after': {after!r} is not an item id.", "after")
        rows = [m for m in rows if (m.seq > seq if order == "asc" else m.seq < seq)]
    return item_list([message_item(m) for m in rows[:limit]], has_more=len(rows) > limit)
