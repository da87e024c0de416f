"""Rows as stored and as the rest of chatsessions sees them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from chatsessions.types import (
    ApiKey,
    Chat,
    ContentPart,
    ContextPolicy,
    Message,
    Role,
    Tool,
    ToolCall,
    TurnStatus,
    parts_json,
    parts_of_json,
    utcnow,
)

#: The chat fields a turn reads besides its messages: changing one is a change to what the
#: next turn sends, so it bumps ``Chat.history_version`` as a deleted message does.
TURN_FIELDS = frozenset({"system_prompt", "backend", "model", "params", "context_policy",
                         "tools"})


def storable(chat_id: str) -> bool:
    """Ids no chat can have (too long, NUL, lone surrogates) are simply not found, before
    the database driver gets to choke on them."""
    if len(chat_id) > 64 or "\x00" in chat_id:
        return False
    try:
        chat_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return dict(value or {})


def tools_value(tools: tuple[Tool, ...]) -> list[dict[str, Any]] | None:
    """A chat's tools as stored: a JSON list, or NULL for none."""
    return [tool.to_dict() for tool in tools] if tools else None


def to_tools(value: Any) -> tuple[Tool, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        value = json.loads(value)
    return tuple(Tool(t["name"], t.get("description", ""), t.get("parameters") or {})
                 for t in value)


def tool_calls_text(calls: tuple[ToolCall, ...] | None) -> str | None:
    """An answer's tool calls as stored: JSON text of ``[{id, name, arguments}]``."""
    if calls is None:
        return None
    return json.dumps([{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls],
                      ensure_ascii=False, separators=(",", ":"))


def to_tool_calls(text: str | None) -> tuple[ToolCall, ...] | None:
    if text is None:
        return None
    return tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in json.loads(text))


def parts_text_value(parts: tuple[ContentPart, ...] | None) -> str | None:
    """A message's parts as stored: JSON text in OpenAI's chat shape, or NULL."""
    if parts is None:
        return None
    return json.dumps(parts_json(parts), ensure_ascii=False, separators=(",", ":"))


def to_parts(text: str | None) -> tuple[ContentPart, ...] | None:
    return None if text is None else parts_of_json(json.loads(text))


def chat_row(chat: Chat) -> dict[str, Any]:
    return {
        "id": chat.id, "tenant_id": chat.tenant_id, "title": chat.title,
        "system_prompt": chat.system_prompt, "backend": chat.backend, "model": chat.model,
        "params": chat.params, "metadata": chat.metadata, "parent_id": chat.parent_id,
        "forked_at_seq": chat.forked_at_seq, "message_count": chat.message_count,
        "prompt_tokens": chat.prompt_tokens, "completion_tokens": chat.completion_tokens,
        "created_at": chat.created_at, "updated_at": chat.updated_at,
        "archived_at": chat.archived_at, "expires_at": chat.expires_at,
        "context_policy": chat.context_policy.value, "tools": tools_value(chat.tools),
        "history_version": chat.history_version,
        "tool_choice": chat.tool_choice,
    }


def to_chat(row: Mapping[Any, Any]) -> Chat:
    return Chat(
        id=row["id"], tenant_id=row["tenant_id"], title=row["title"],
        system_prompt=row["system_prompt"], backend=row["backend"], model=row["model"],
        params=_json(row["params"]), metadata=_json(row["metadata"]),
        parent_id=row["parent_id"], forked_at_seq=row["forked_at_seq"],
        message_count=row["message_count"], prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        created_at=_utc(row["created_at"]) or utcnow(),
        updated_at=_utc(row["updated_at"]) or utcnow(),
        archived_at=_utc(row["archived_at"]), expires_at=_utc(row["expires_at"]),
        context_policy=ContextPolicy(row["context_policy"]), tools=to_tools(row["tools"]),
        history_version=row["history_version"],
        tool_choice=row["tool_choice"],
    )


def message_row(m: Message) -> dict[str, Any]:
    return {
        "chat_id": m.chat_id, "seq": m.seq, "role": m.role.value, "content": m.content,
        "status": m.status.value, "error": m.error, "model": m.model,
        "prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens,
        "latency_ms": m.latency_ms, "created_at": m.created_at,
        "idempotency_key": m.idempotency_key, "context_messages": m.context_messages,
        "context_tokens": m.context_tokens, "covers_seq": m.covers_seq,
        "replaces_seq": m.replaces_seq, "tool_calls": tool_calls_text(m.tool_calls),
        "tool_call_id": m.tool_call_id, "parts": parts_text_value(m.parts),
    }


_BOUND = {name: f"m_{name}" for name in message_row(Message("", 0, Role.USER, ""))}


def bound_row(m: Message) -> dict[str, Any]:
    """``message_row`` keyed by the binds of ``statements.MESSAGE_BINDS``."""
    return {_BOUND[name]: value for name, value in message_row(m).items()}


def to_message(row: Mapping[Any, Any]) -> Message:
    return Message(
        chat_id=row["chat_id"], seq=row["seq"], role=Role(row["role"]),
        content=row["content"], status=TurnStatus(row["status"]), error=row["error"],
        model=row["model"], prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"], latency_ms=row["latency_ms"],
        created_at=_utc(row["created_at"]) or utcnow(),
        idempotency_key=row["idempotency_key"], context_messages=row["context_messages"],
        context_tokens=row["context_tokens"], covers_seq=row["covers_seq"],
        replaces_seq=row["replaces_seq"], tool_calls=to_tool_calls(row["tool_calls"]),
        tool_call_id=row["tool_call_id"], parts=to_parts(row["parts"]),
    )


def to_api_key(row: Mapping[Any, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"], tenant_id=row["tenant_id"], key_hash=row["key_hash"], name=row["name"],
        created_at=_utc(row["created_at"]) or utcnow(), revoked_at=_utc(row["revoked_at"]),
    )


def with_seq(message: Message, seq: int) -> Message:
    return replace(message, seq=seq)
