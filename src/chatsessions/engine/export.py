"""A chat as a document: lossless JSON or readable Markdown (shared by the CLI and service).

The JSON is what :mod:`chatsessions.engine.importing` takes back: every chat field but the tenant
(an import lands in the importer's tenant) and the history version (a stamp for this
database's caches), and every stored message, whatever its status, with its seq, but
without the chat id it repeats or its idempotency key (a short-lived retry token of the
request that wrote it).
"""

from __future__ import annotations

import json
from typing import Any

from chatsessions.types import Chat, ImagePart, Message, TurnStatus

FORMATS = ("json", "markdown")
#: The JSON document's format: version 3 added tool calls, tool outputs and a chat's
#: tools, version 4 a message's ``parts`` (text and images, when it holds images);
#: versions 1 to 3 (older exports) are still imported.
FORMAT = "chatsessions.chat.v4"
#: Fields left out of a JSON export, and why: see the module's docstring.
CHAT_FIELDS_LEFT_OUT = ("tenant_id", "history_version")
#: ``parsed`` is an answer's JSON read back for the caller, never stored
MESSAGE_FIELDS_LEFT_OUT = ("chat_id", "idempotency_key", "parsed")


def export_json(chat: Chat, messages: list[Message]) -> dict[str, Any]:
    """The lossless document of ``chat`` and its stored ``messages`` (a seq-0 system
    prompt, as :meth:`history` puts first, is left out: it is the chat's field)."""
    doc = chat.to_dict()
    for name in CHAT_FIELDS_LEFT_OUT:
        doc.pop(name, None)
    rows = []
    for message in messages:
        if message.seq == 0:
            continue
        row = message.to_dict()
        for name in MESSAGE_FIELDS_LEFT_OUT:
            row.pop(name, None)
        rows.append(row)
    return {"format": FORMAT, "chat": doc, "messages": rows}


def export_markdown(chat: Chat, messages: list[Message]) -> str:
    lines = [f"# {chat.title or 'Chat ' + chat.id}", ""]
    lines.append(f"- id: `{chat.id}`")
    lines.append(f"- model: `{chat.model}` ({chat.backend})")
    lines.append(f"- created: {chat.created_at.isoformat()}")
    lines.append(f"- tokens: {chat.prompt_tokens} prompt, {chat.completion_tokens} completion")
    if chat.tools:
        lines.append("- tools: " + ", ".join(f"`{tool.name}`" for tool in chat.tools))
    if chat.tool_choice is not None:
        lines.append(f"- tool choice: `{chat.tool_choice}`")
    lines.append("")
    for message in messages:
        heading = message.role.value.capitalize()
        if message.status is not TurnStatus.OK:
            heading += f" ({message.status.value}: {message.error or 'no answer'})"
        if message.tool_call_id is not None:
            heading += f" (output of `{message.tool_call_id}`)"
        lines += [f"## {heading}", ""]
        if message.content or not (message.tool_calls or message.parts):
            lines += [message.content, ""]
        for part in message.parts or ():
            if isinstance(part, ImagePart):
                lines += [_image(part.url), ""]
        for call in message.tool_calls or ():
            lines += [f"**Tool call** `{call.name}` (`{call.id}`)", "", "```json",
                      call.arguments, "```", ""]
    return "\n".join(lines)


def _image(url: str) -> str:
    """An image as Markdown: a linked one shown, an inline one named (its base64 would
    fill pages)."""
    if url.startswith("data:"):
        media = url[5:url.find(";")] if ";" in url else "image"
        size = (len(url) - url.find(",") - 1) * 3 // 4
        return f"*[{media}, {size:,} bytes]*"
    return f"![image]({url})"


def render(chat: Chat, messages: list[Message], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(export_json(chat, messages), indent=2, ensure_ascii=False)
    if fmt == "markdown":
        return export_markdown(chat, messages)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
