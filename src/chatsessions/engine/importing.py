"""Chats from documents: a chatsessions JSON export (lossless) or an OpenAI-style
``messages`` list. Everything is checked before anything is stored, and a refusal names the
offending field, so a malformed file is a clear :class:`InvalidInput`, never half a chat.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatsessions.backends import installed
from chatsessions.config import Settings
from chatsessions.engine.content import check_content
from chatsessions.engine.export import FORMAT
from chatsessions.engine.tools import check_tool_choice, check_tools
from chatsessions.errors import InvalidInput
from chatsessions.types import (
    TOOL_NAME,
    Chat,
    ContentPart,
    ContextPolicy,
    Message,
    Role,
    ToolCall,
    TurnStatus,
    utcnow,
)
from chatsessions.validation import (
    MAX_TITLE_CHARS,
    check_label,
    check_metadata,
    check_params,
    check_text,
    check_when,
)

#: Formats :func:`build_chat` reads: the current one and the older ones.
FORMATS = (FORMAT, "chatsessions.chat.v3", "chatsessions.chat.v2", "chatsessions.chat.v1")
#: Stored answers are not bound by the message limit; this bounds what an import holds.
MAX_CONTENT_CHARS = 1_000_000
MAX_MESSAGES = 100_000
MAX_TOOL_CALLS = 128
MAX_CALL_ID_CHARS = 200
INT32 = 2**31 - 1
INT64 = 2**63 - 1
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Count = Field(default=0, ge=0, le=INT32)
OptionalCount = Field(default=None, ge=0, le=INT32)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class ToolCallDoc(_Doc):
    """One tool call of an answer, as exported (flat)."""

    id: str
    name: str
    arguments: str


class MessageDoc(_Doc):
    """One stored message of an export."""

    seq: int = Field(ge=0, le=INT32)
    role: Role
    content: str
    status: TurnStatus = TurnStatus.OK
    error: str | None = None
    model: str | None = None
    prompt_tokens: int = Count
    completion_tokens: int = Count
    latency_ms: int | None = OptionalCount
    created_at: datetime | None = None
    context_messages: int | None = OptionalCount
    context_tokens: int | None = OptionalCount
    covers_seq: int | None = OptionalCount
    replaces_seq: int | None = OptionalCount
    tool_calls: list[ToolCallDoc] | None = Field(default=None, max_length=MAX_TOOL_CALLS)
    tool_call_id: str | None = None
    #: version 4: the content as parts, on messages with images
    parts: list[dict[str, Any]] | None = None
    # written by version 1, not imported (see chatsessions.engine.export)
    chat_id: str | None = None
    idempotency_key: str | None = None


class ChatDoc(_Doc):
    """The chat of an export; missing counters and times are derived or set to now."""

    id: str | None = None
    system_prompt: str
    title: str | None = None
    backend: str | None = None
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_id: str | None = None
    forked_at_seq: int | None = OptionalCount
    message_count: int | None = OptionalCount
    prompt_tokens: int | None = Field(default=None, ge=0, le=INT64)
    completion_tokens: int | None = Field(default=None, ge=0, le=INT64)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    archived_at: datetime | None = None
    expires_at: datetime | None = None
    context_policy: ContextPolicy = ContextPolicy.TRIM
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None
    # written by version 1, not imported: an import lands in the importer's tenant
    tenant_id: str | None = None


class ExportDoc(_Doc):
    format: str
    chat: ChatDoc
    messages: list[MessageDoc] = Field(default_factory=list, max_length=MAX_MESSAGES)


class OpenAIFunction(_Doc):
    name: str
    arguments: str


class OpenAIToolCall(_Doc):
    id: str
    type: Literal["function"] = "function"
    function: OpenAIFunction


class OpenAIMessage(_Doc):
    role: Literal["system", "user", "assistant", "tool"]
    #: None only on an answer that calls tools; a list: text and image parts
    content: str | list[dict[str, Any]] | None
    tool_calls: list[OpenAIToolCall] | None = Field(default=None, max_length=MAX_TOOL_CALLS)
    tool_call_id: str | None = None


class OpenAIDoc(_Doc):
    """``{"messages": [...]}``, as in a chat completion request, with an optional title."""

    messages: list[OpenAIMessage] = Field(max_length=MAX_MESSAGES)
    title: str | None = None


def build_chat(
    data: Any,
    *,
    tenant_id: str,
    settings: Settings,
    default_backend: str,
    default_model: Callable[[str], str],
    keep_id: bool = False,
) -> tuple[Chat, list[Message]]:
    """The chat and messages ``data`` describes, checked, ready to store.

    ``data`` is an export (an object with ``format``), a list of ``{role, content}``
    messages, or ``{"messages": [...]}``. The chat gets a new id unless ``keep_id`` (then
    the export's own id is used; the store refuses it if it is taken).
    """
    if isinstance(data, list):
        return _from_openai(_parse(OpenAIDoc, {"messages": data}), tenant_id, settings,
                            default_backend, default_model)
    if not isinstance(data, dict):
        raise InvalidInput('expected a chatsessions export (an object with "format") or a '
                           'list of {"role", "content"} messages')
    if "format" not in data:
        if "messages" not in data:
            raise InvalidInput('expected a chatsessions export (an object with "format") '
                               'or {"messages": [...]}')
        if keep_id:
            raise InvalidInput("keep_id needs a chatsessions export: a messages list has no id")
        return _from_openai(_parse(OpenAIDoc, data), tenant_id, settings,
                            default_backend, default_model)
    if data["format"] not in FORMATS:
        raise InvalidInput(f"unsupported format {str(data['format'])[:100]!r}; this version "
                           f"reads {' and '.join(FORMATS)}")
    return _from_export(_parse(ExportDoc, data), tenant_id, settings, default_backend,
                        default_model, keep_id)


def _parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or 'document'}: {err['msg']}"
                    for err in exc.errors()[:5]]
        more = exc.error_count() - len(problems)
        raise InvalidInput("; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
                           ) from None


def _from_openai(
    doc: OpenAIDoc, tenant_id: str, settings: Settings, default_backend: str,
    default_model: Callable[[str], str],
) -> tuple[Chat, list[Message]]:
    messages = list(doc.messages)
    system_prompt = settings.system_prompt
    if messages and messages[0].role == "system":
        first = messages.pop(0).content or ""
        text, parts = check_content(first, field="messages.0.content",
                                    max_chars=settings.max_message_chars, allow_empty=True)
        if parts is not None:
            raise InvalidInput("messages.0.content: a system prompt is text, not images")
        system_prompt = text
    offset = len(doc.messages) - len(messages)
    now = utcnow()
    chat_id = str(uuid.uuid4())
    rows = []
    for index, message in enumerate(messages, start=offset):
        if message.role == "system":
            raise InvalidInput(f"messages.{index}.role: only the first message may be the "
                               "system prompt")
        where = f"messages.{index}"
        calls = None if message.tool_calls is None else tuple(
            ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls)
        if message.content is None and not calls:
            raise InvalidInput(f"{where}.content: only an answer that calls tools may "
                               "have none")
        content, parts = _content(message.content or "", f"{where}.content",
                                  allow_empty=bool(calls) or message.role == "tool")
        rows.append(_with_tools(
            Message(chat_id, index - offset + 1, Role(message.role), content, created_at=now,
                    parts=parts),
            calls, message.tool_call_id, where))
    _check_tool_rounds(rows, first=offset)
    chat = Chat(
        id=chat_id, tenant_id=tenant_id, system_prompt=system_prompt,
        title=_title(doc.title), backend=default_backend, model=default_model(default_backend),
        message_count=len(rows), created_at=now, updated_at=now,
    )
    return chat, rows


def _from_export(
    doc: ExportDoc, tenant_id: str, settings: Settings, default_backend: str,
    default_model: Callable[[str], str], keep_id: bool,
) -> tuple[Chat, list[Message]]:
    source = doc.chat
    if keep_id:
        if not source.id:
            raise InvalidInput("keep_id: the export has no chat.id")
        chat_id = check_label(source.id, field="chat.id", max_chars=64)
        if not chat_id.strip():
            raise InvalidInput("chat.id is empty")
    else:
        chat_id = str(uuid.uuid4())
    now = utcnow()
    rows: list[Message] = []
    for index, m in enumerate(doc.messages):
        if m.seq == 0:
            if m.role is Role.SYSTEM:
                continue  # version 1 put the system prompt first; it is chat.system_prompt
            raise InvalidInput(f"messages.{index}.seq: 0 is the system prompt's")
        where = f"messages.{index}"
        content, parts = check_text(m.content, field=f"{where}.content",
                                    max_chars=MAX_CONTENT_CHARS, allow_empty=True), None
        if m.parts is not None:
            content, parts = _content(m.parts, f"{where}.parts", allow_empty=True)
            if parts is None or content != m.content:
                raise InvalidInput(f"{where}.parts: stored only with images, and the "
                                   "message's content is the text of its parts")
        rows.append(Message(
            chat_id=chat_id, seq=m.seq, role=m.role, content=content, parts=parts,
            status=m.status,
            error=None if m.error is None else check_text(
                m.error, field=f"{where}.error", max_chars=10_000, allow_empty=True),
            model=None if m.model is None else check_label(
                m.model, field=f"{where}.model", max_chars=200),
            prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens,
            latency_ms=m.latency_ms,
            created_at=_when(m.created_at, f"{where}.created_at") or now,
            context_messages=m.context_messages, context_tokens=m.context_tokens,
            covers_seq=m.covers_seq, replaces_seq=m.replaces_seq,
        ))
        calls = None if m.tool_calls is None else tuple(
            ToolCall(c.id, c.name, c.arguments) for c in m.tool_calls)
        rows[-1] = _with_tools(rows[-1], calls, m.tool_call_id, where)
    rows.sort(key=lambda m: m.seq)
    seqs = [m.seq for m in rows]
    if len(set(seqs)) != len(seqs):
        raise InvalidInput("messages: two messages have the same seq")
    highest = seqs[-1] if seqs else 0
    message_count = highest if source.message_count is None else source.message_count
    if message_count < highest:
        raise InvalidInput(f"chat.message_count ({message_count}) is below the highest "
                           f"message seq ({highest})")
    if source.forked_at_seq is not None and source.forked_at_seq > message_count:
        raise InvalidInput("chat.forked_at_seq is beyond chat.message_count")
    backend = source.backend or default_backend
    if backend not in (names := installed()):
        raise InvalidInput(
            f"chat.backend must be an installed backend: {', '.join(sorted(names))}")
    created = _when(source.created_at, "chat.created_at") or now
    chat = Chat(
        id=chat_id, tenant_id=tenant_id,
        system_prompt=check_text(source.system_prompt, field="chat.system_prompt",
                                 max_chars=settings.max_message_chars, allow_empty=True),
        title=_title(source.title),
        backend=backend,
        model=check_label(source.model, field="chat.model", max_chars=200) if source.model
        else default_model(backend),
        params=_checked(lambda: check_params(source.params).as_kwargs(), "chat.params"),
        metadata=_checked(lambda: check_metadata(source.metadata), "chat.metadata"),
        parent_id=None if source.parent_id is None else check_label(
            source.parent_id, field="chat.parent_id", max_chars=64),
        forked_at_seq=source.forked_at_seq,
        message_count=message_count,
        prompt_tokens=sum(m.prompt_tokens for m in rows) if source.prompt_tokens is None
        else source.prompt_tokens,
        completion_tokens=sum(m.completion_tokens for m in rows)
        if source.completion_tokens is None else source.completion_tokens,
        created_at=created,
        updated_at=_when(source.updated_at, "chat.updated_at") or created,
        archived_at=_when(source.archived_at, "chat.archived_at"),
        expires_at=_when(source.expires_at, "chat.expires_at"),
        context_policy=source.context_policy,
        tools=check_tools(source.tools, field="chat.tools"),
    )
    chat = replace(chat, tool_choice=_checked(
        lambda: check_tool_choice(source.tool_choice, chat.tools), "chat.tool_choice"))
    return chat, rows


def _with_tools(message: Message, calls: tuple[ToolCall, ...] | None,
                call_id: str | None, where: str) -> Message:
    """``message`` with its tool calls or its call id, each checked and on the right role."""
    if calls is not None:
        if message.role is not Role.ASSISTANT:
            raise InvalidInput(f"{where}.tool_calls: only an assistant message calls tools")
        for index, call in enumerate(calls):
            at = f"{where}.tool_calls.{index}"
            check_label(call.id, field=f"{at}.id", max_chars=MAX_CALL_ID_CHARS)
            if not call.id:
                raise InvalidInput(f"{at}.id is empty")
            if not TOOL_NAME.match(call.name):
                raise InvalidInput(f"{at}.name must be 1 to 64 letters, digits, _ or -")
            check_text(call.arguments, field=f"{at}.arguments", max_chars=MAX_CONTENT_CHARS,
                       allow_empty=True)
        if len({call.id for call in calls}) != len(calls):
            raise InvalidInput(f"{where}.tool_calls: two calls have the same id")
    if (call_id is None) != (message.role is not Role.TOOL):
        raise InvalidInput(f"{where}.tool_call_id: a tool message needs one, and only a "
                           "tool message has one")
    if call_id is not None:
        check_label(call_id, field=f"{where}.tool_call_id", max_chars=MAX_CALL_ID_CHARS)
    return replace(message, tool_calls=calls, tool_call_id=call_id)


def _check_tool_rounds(rows: list[Message], *, first: int) -> None:
    """Every tool output answers a call of the answer just before it (only other outputs
    between), each call once, and every call is answered before the conversation goes on:
    the model must never see an output without its call nor a call without its output.
    Only the last answer's calls may still wait for outputs."""
    waiting: set[str] = set()
    for index, message in enumerate(rows, start=first):
        if message.role is Role.TOOL:
            if message.tool_call_id not in waiting:
                raise InvalidInput(f"messages.{index}.tool_call_id: no call of the answer "
                                   f"before it has the id {message.tool_call_id!r}")
            waiting.discard(message.tool_call_id or "")
            continue
        if waiting:
            raise InvalidInput(f"messages.{index}: the tool calls {sorted(waiting)} have no "
                               "output before it")
        waiting = {call.id for call in message.tool_calls or ()}


def _content(value: str | list[dict[str, Any]], where: str, *, allow_empty: bool,
             ) -> tuple[str, tuple[ContentPart, ...] | None]:
    """A message's text and parts; the text may be empty only where ``allow_empty``."""
    return check_content(value, field=where, max_chars=MAX_CONTENT_CHARS,
                         allow_empty=allow_empty)


def _title(title: str | None) -> str | None:
    if title is None:
        return None
    return check_label(title, field="title", max_chars=MAX_TITLE_CHARS)


def _when(value: datetime | None, field: str) -> datetime | None:
    when: datetime | None = check_when(value, field=field)
    return when


def _checked(check: Callable[[], T], field: str) -> T:
    """Run a shared check, naming the document's field in its refusal."""
    try:
        return check()
    except InvalidInput as exc:
        raise InvalidInput(f"{field}: {exc}") from None
