"""A chat as a document: lossless JSON or readable Markdown (shared by the CLI and service)."""

from __future__ import annotations

import json
from typing import Any

from chatsessions.types import Chat, Message, TurnStatus

FORMATS = ("json", "markdown")


def export_json(chat: Chat, messages: list[Message]) -> dict[str, Any]:
    return {
        "format": "chatsessions.chat.v1",
        "chat": chat.to_dict(),
        "messages": [m.to_dict() for m in messages],
    }


def export_markdown(chat: Chat, messages: list[Message]) -> str:
    lines = [f"# {chat.title or 'Chat ' + chat.id}", ""]
    lines.append(f"- id: `{chat.id}`")
    lines.append(f"- model: `{chat.model}` ({chat.backend})")
    lines.append(f"- created: {chat.created_at.isoformat()}")
    lines.append(f"- tokens: {chat.prompt_tokens} prompt, {chat.completion_tokens} completion")
    lines.append("")
    for message in messages:
        heading = message.role.value.capitalize()
        if message.status is not TurnStatus.OK:
            heading += f" ({message.status.value}: {message.error or 'no answer'})"
        lines += [f"## {heading}", "", message.content, ""]
    return "\n".join(lines)


def render(chat: Chat, messages: list[Message], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(export_json(chat, messages), indent=2, ensure_ascii=False)
    if fmt == "markdown":
        return export_markdown(chat, messages)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
