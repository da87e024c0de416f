"""``chatsessions chat``: an interactive session that can hold and switch many chats."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from chatsessions import ChatSessions, ChatSessionsError
from chatsessions.cli.common import console, open_sessions

app = typer.Typer()

HELP = (
    "/new [SYSTEM PROMPT]  start a chat    /list  list chats    /switch ID  change chat\n"
    "/history  show this chat    /system TEXT  set its system prompt    /quit  leave"
)


@app.command()
def chat(
    ctx: typer.Context,
    chat_id: Annotated[str | None, typer.Option("--chat", help="resume this chat")] = None,
) -> None:
    """Talk with the model; answers stream as they are written."""
    with open_sessions(ctx) as chats:
        current = chats.get_chat(chat_id).id if chat_id else chats.create_chat()
        console.print(f"[dim]{HELP}[/dim]\nchat [bold]{current}[/bold]")
        while True:
            try:
                line = console.input("[bold green]you>[/bold green] ").strip()
            except EOFError:
                break
            if not line:
                continue
            try:
                if line.startswith("/"):
                    result = _command(chats, current, line)
                    if result is None:
                        break
                    current = result
                else:
                    console.print("[bold blue]bot>[/bold blue] ", end="")
                    for delta in chats.stream_message(current, line):
                        console.out(delta, end="", highlight=False)
                    console.out("")
            except ChatSessionsError as exc:
                console.print(f"[red]error:[/red] {escape(str(exc))}")


def _command(chats: ChatSessions, current: str, line: str) -> str | None:
    """Run one slash command; return the chat to continue with, or None to quit."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit", "/q"):
        return None
    if name == "/new":
        current = chats.create_chat(arg or None)
        console.print(f"chat [bold]{current}[/bold]")
    elif name == "/list":
        for chat in chats.list_chats(limit=20):
            mark = "*" if chat.id == current else " "
            console.print(f"{mark} {chat.id}  {chat.message_count:>4} messages  "
                          f"{escape(chat.title or '')}", highlight=False)
    elif name == "/switch":
        current = chats.get_chat(arg).id
        console.print(f"chat [bold]{current}[/bold]")
    elif name == "/history":
        for message in chats.history(current, include_failed=True):
            console.print(f"[bold]{message.role.value}[/bold]: {escape(message.content)}")
    elif name == "/system":
        chats.update_chat(current, system_prompt=arg)
        console.print("system prompt updated")
    else:
        console.print(f"[dim]{HELP}[/dim]")
    return current
