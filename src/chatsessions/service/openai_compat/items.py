"""Conversation items and ids: OpenAI's message items mapped onto stored messages.

Nothing beyond chats and messages is stored, so ids encode what they point at:

* conversation id = the chat id (the same chat is served by ``/chats``);
* item id = ``msg_<seq>`` for a message's text, ``fc_<seq>_<n>`` for the n-th function
  call of the answer ``seq``, ``fco_<seq>`` for the tool output ``seq`` (unique within
  its conversation, as the items API addresses them);
* response id = ``resp_<chat id>_<seq of the answer>``.

An answer with tool calls is one stored message and several items: its text (if any) as
a message item, then one ``function_call`` item per call; a ``function_call_output`` item
is a tool message. Items coming in are grouped back the same way. Only text is carried
otherwise: images, files, audio and other item types are refused with a 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from chatsessions.service.openai_compat.errors import bad_request, unsupported
from chatsessions.types import Message, Role, ToolCall, TurnStatus

ITEM_PREFIX = "msg_"
ITEM_ID = r"^(msg_[0-9]{1,9}|fc_[0-9]{1,9}_[0-9]{1,3}|fco_[0-9]{1,9})$"
_ITEM = re.compile(ITEM_ID)
RESPONSE_PREFIX = "resp_"
TEXT_PARTS = ("input_text", "output_text", "text")
INPUT_ROLES = ("user", "assistant", "system", "developer")


@dataclass(frozen=True, slots=True)
class InputMessage:
    """One text message from a request; ``developer`` counts as ``system``."""

    role: Literal["user", "assistant", "system"]
    text: str


@dataclass(frozen=True, slots=True)
class InputCall:
    """A ``function_call`` item: a call the model made, as the caller replays it."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class InputOutput:
    """A ``function_call_output`` item: the caller's output of one call."""

    call_id: str
    output: str


InputItem = InputMessage | InputCall | InputOutput


@dataclass(slots=True)
class Row:
    """One message to store, in the library's chat shape (what ``as_chat`` gives)."""

    role: Literal["user", "assistant", "tool"]
    text: str
    calls: list[ToolCall] = field(default_factory=list)
    call_id: str | None = None

    def as_chat(self) -> dict[str, Any]:
        if self.role == "tool":
            return {"role": "tool", "content": self.text, "tool_call_id": self.call_id}
        if self.calls:
            return {"role": "assistant", "content": self.text,
                    "tool_calls": [call.as_openai() for call in self.calls]}
        return {"role": self.role, "content": self.text}


def item_id(seq: int) -> str:
    return f"{ITEM_PREFIX}{seq}"


def parse_item_id(value: str) -> int | None:
    """The seq of the message an item id points into (any of the three kinds)."""
    if not _ITEM.match(value):
        return None
    return int(value.split("_")[1])


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


def parse_input(items: Any, param: str) -> list[InputItem]:
    """``input``/``items`` as text messages, function calls and their outputs: a string
    is one user message."""
    if isinstance(items, str):
        return [InputMessage("user", items)]
    if not isinstance(items, list):
        raise bad_request("Expected a string or a list of input items.", param)
    parsed: list[InputItem] = []
    for index, item in enumerate(items):
        where = f"{param}[{index}]"
        if not isinstance(item, dict):
            raise bad_request("An input item must be an object.", where)
        kind = item.get("type", "message")
        if kind == "function_call":
            parsed.append(InputCall(_call(item, where)))
            continue
        if kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request("A function_call_output item needs the 'call_id' of its "
                                  "call.", f"{where}.call_id")
            output = item.get("output")
            text = output if isinstance(output, str) else content_text(output, f"{where}.output")
            parsed.append(InputOutput(call_id, text))
            continue
        if kind != "message":
            raise unsupported(f"{where}.type", f"Input items of type '{kind}' are not supported")
        role = item.get("role")
        if role not in INPUT_ROLES:
            raise bad_request(f"Unsupported role {role!r}: expected one of "
                              f"{', '.join(INPUT_ROLES)}.", f"{where}.role")
        text = content_text(item.get("content"), f"{where}.content")
        parsed.append(InputMessage("system" if role in ("system", "developer") else role, text))
    return parsed


def _call(item: dict[str, Any], where: str) -> ToolCall:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request("A function_call item needs its 'call_id'.", f"{where}.call_id")
    if not isinstance(name, str) or not name:
        raise bad_request("A function_call item needs the function's 'name'.", f"{where}.name")
    if not isinstance(arguments, str):
        raise bad_request("A function_call item's 'arguments' must be a JSON string.",
                          f"{where}.arguments")
    return ToolCall(call_id, name, arguments)


def is_system(item: InputItem) -> bool:
    return isinstance(item, InputMessage) and item.role == "system"


def split_system(messages: list[InputItem],
                 param: str) -> tuple[str | None, list[InputItem]]:
    """Leading system/developer messages joined into one prompt, and the rest; a system
    message later on is refused, as it would have no place in a stored history."""
    count = 0
    while count < len(messages) and is_system(messages[count]):
        count += 1
    rest = messages[count:]
    for index, message in enumerate(rest, count):
        if is_system(message):
            raise bad_request("System and developer messages are only accepted before the "
                              "first user or assistant message.", f"{param}[{index}].role")
    prompt = "\n\n".join(m.text for m in messages[:count]  # type: ignore[union-attr]
                          ) if count else None
    return prompt, rest


def rows_of(items: list[InputItem], param: str, start: int = 0) -> list[Row]:
    """Items as the messages to store: function calls join the assistant message just
    before them (our own answers come back as a text item and call items), or make one
    of their own; each output is a tool message. A system item is refused here (``start``:
    the index of the first item in the request, for error messages)."""
    rows: list[Row] = []
    for index, item in enumerate(items, start):
        if isinstance(item, InputCall):
            last = rows[-1] if rows else None
            if last is not None and last.role == "assistant":
                last.calls.append(item.call)
            else:
                rows.append(Row("assistant", "", [item.call]))
        elif isinstance(item, InputOutput):
            rows.append(Row("tool", item.output, call_id=item.call_id))
        elif item.role == "system":
            raise bad_request("System and developer items are only accepted first (they "
                              "become the system prompt).", f"{param}[{index}].role")
        else:
            rows.append(Row(item.role, item.text))
    return rows


# responses ------------------------------------------------------------------------------

def message_items(message: Message) -> list[dict[str, Any]]:
    """A stored message as conversation items: an answer with tool calls is its text (if
    any) and one ``function_call`` item per call; a tool output is a
    ``function_call_output``."""
    status = "completed" if message.status is TurnStatus.OK else "incomplete"
    if message.role is Role.TOOL:
        return [{"id": f"fco_{message.seq}", "type": "function_call_output",
                 "call_id": message.tool_call_id, "output": message.content,
                 "status": status}]
    if message.role is Role.ASSISTANT:
        return output_items(message.seq, message.content, message.tool_calls or (), status)
    return [{"id": item_id(message.seq), "type": "message", "role": message.role.value,
             "status": status, "content": [{"type": "input_text", "text": message.content}]}]


def output_items(base: int | str, text: str, calls: tuple[ToolCall, ...] | list[ToolCall],
                 status: str = "completed") -> list[dict[str, Any]]:
    """An answer as output items, ``msg_<base>`` and ``fc_<base>_<n>`` (``base``: the
    answer's seq when stored): its text (left out when it is empty and the answer calls
    tools), then its calls."""
    items = [] if calls and not text else [output_message(f"{ITEM_PREFIX}{base}", text, status)]
    return items + [function_call_item(call_item_id_of(str(base), n), call, status)
                    for n, call in enumerate(calls)]


def call_item_id_of(base: str, index: int) -> str:
    """The id of the ``index``-th call of the answer whose text item is ``msg_<base>``."""
    return f"fc_{base}_{index}"


def function_call_item(id_: str, call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {"id": id_, "type": "function_call", "call_id": call.id, "name": call.name,
            "arguments": call.arguments, "status": status}


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
    """Cursor paging by item id over the messages' items in order, as OpenAI's lists
    page (an unknown ``after`` within the range starts after its message)."""
    items = [item for message in messages for item in message_items(message)]
    rows = items if order == "asc" else items[::-1]
    if after is not None:
        if parse_item_id(after) is None:
            raise bad_request(f"Invalid 'after': {after!r} is not an item id.", "after")
        ids = [item["id"] for item in rows]
        if after in ids:
            rows = rows[ids.index(after) + 1:]
        else:
            seq = parse_item_id(after) or 0
            rows = [item for item in rows if (parse_item_id(item["id"]) or 0) > seq] \
                if order == "asc" else \
                [item for item in rows if (parse_item_id(item["id"]) or 0) < seq]
    return item_list(rows[:limit], has_more=len(rows) > limit)
