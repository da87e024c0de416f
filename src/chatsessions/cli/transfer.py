"""Chats in and out of files: export (one chat or all), import, and titles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from chatsessions import ChatSessions, InvalidInput
from chatsessions.cli.common import console, open_sessions

app = typer.Typer()

#: the export formats, and the file suffix of each
SUFFIXES = {"json": ".json", "markdown": ".md"}


def _render(chats: ChatSessions, chat_id: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(chats.export_chat(chat_id), indent=2, ensure_ascii=False)
    return chats.export_markdown(chat_id)


@app.command()
def export(
    ctx: typer.Context,
    chat_id: Annotated[str | None, typer.Argument(help="the chat (or use --all)")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="json or markdown")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write")] = None,
    all_to: Annotated[Path | None, typer.Option(
        "--all", help="write every chat (archived too) to this directory, one file each",
        file_okay=False)] = None,
) -> None:
    """Export a chat as JSON (lossless: `import` takes it back) or Markdown."""
    if format not in SUFFIXES:
        raise typer.BadParameter(f"choose one of {', '.join(SUFFIXES)}", param_hint="--format")
    if (chat_id is None) == (all_to is None):
        raise typer.BadParameter("give a CHAT_ID or --all DIR (not both)")
    with open_sessions(ctx) as chats:
        if all_to is not None:
            all_to.mkdir(parents=True, exist_ok=True)
            written = 0
            before = None
            while page := chats.list_chats(limit=200, before=before, include_archived=True):
                for chat in page:
                    path = all_to / f"{chat.id}{SUFFIXES[format]}"
                    path.write_text(_render(chats, chat.id, format) + "\n", encoding="utf-8")
                    written += 1
                before = (page[-1].created_at, page[-1].id)
            console.print(f"{written} chats written to {escape(str(all_to))}", highlight=False)
            return
        assert chat_id is not None
        text = _render(chats, chat_id, format)
    if output is None:
        console.out(text, highlight=False)
    else:
        output.write_text(text + "\n", encoding="utf-8")


@app.command("import")
def import_chat(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(
        help="a JSON export, or a JSON list of {role, content} messages; - reads stdin",
        allow_dash=True)],
    keep_id: Annotated[bool, typer.Option(
        help="keep the export's chat id (refused if it is taken)")] = False,
) -> None:
    """Import a chat and print its id."""
    try:
        raw = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {file}: {exc}") from None
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"{file} is not JSON: {exc}") from None
    with open_sessions(ctx) as chats:
        console.print(chats.import_chat(data, keep_id=keep_id), highlight=False)


@app.command()
def title(
    ctx: typer.Context,
    chat_id: str,
    new_title: Annotated[str | None, typer.Argument(metavar="TITLE",
                                                    help="the new title")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="remove the title")] = False,
) -> None:
    """Print a chat's title, or set it (untitled chats are titled after their first
    exchange unless CHATSESSIONS_AUTO_TITLE=0)."""
    with open_sessions(ctx) as chats:
        if clear:
            chats.update_chat(chat_id, title=None)
        elif new_title is not None:
            chats.update_chat(chat_id, title=new_title)
        else:
            console.out(chats.get_chat(chat_id).title or "", highlight=False)
