"""One-shot commands: new, policy, send, list, show, rm, archive (export, import and
title: ``transfer``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from chatsessions import ContextPolicy, TurnStatus
from chatsessions.cli.common import console, open_sessions

app = typer.Typer()


@app.command()
def new(
    ctx: typer.Context,
    system: Annotated[str | None, typer.Option(help="system prompt for this chat")] = None,
    title: Annotated[str | None, typer.Option(help="a title to find it again")] = None,
    context_policy: Annotated[ContextPolicy, typer.Option(
        help="once the chat outgrows the model's window: trim the oldest turns, summarize "
             "them, or refuse (none)")] = ContextPolicy.TRIM,
) -> None:
    """Create a chat and print its id."""
    with open_sessions(ctx) as chats:
        console.print(chats.create_chat(system, title=title, context_policy=context_policy),
                      highlight=False)


@app.command()
def policy(
    ctx: typer.Context,
    chat_id: str,
    new_policy: Annotated[ContextPolicy | None, typer.Argument(
        metavar="POLICY", help="the new context policy")] = None,
) -> None:
    """Print a chat's context policy, or change it; the next turn follows the new one
    (earlier turns and summaries stay as they are)."""
    with open_sessions(ctx) as chats:
        if new_policy is None:
            console.out(chats.get_chat(chat_id).context_policy.value, highlight=False)
        else:
            chats.update_chat(chat_id, context_policy=new_policy)


@app.command()
def send(
    ctx: typer.Context,
    chat_id: str,
    text: str,
    stream: Annotated[bool, typer.Option(help="print the answer as it arrives")] = False,
) -> None:
    """Send TEXT to a chat (with its whole history) and print the answer."""
    with open_sessions(ctx) as chats:
        if stream:
            for delta in chats.stream_message(chat_id, text):
                console.out(delta, end="", highlight=False)
            console.out("")
        else:
            console.out(chats.send_message(chat_id, text), highlight=False)


@app.command("list")
def list_chats(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    include_archived: Annotated[bool, typer.Option(help="list archived chats too")] = False,
) -> None:
    """List chats, newest first."""
    with open_sessions(ctx) as chats:
        table = Table("id", "title", "messages", "model", "updated")
        for chat in chats.list_chats(limit=limit, include_archived=include_archived):
            title = escape(chat.title or "") + (" (archived)" if chat.archived_at else "")
            table.add_row(chat.id, title, str(chat.message_count),
                          chat.model, chat.updated_at.strftime("%Y-%m-%d %H:%M"))
        console.print(table)


@app.command()
def show(ctx: typer.Context, chat_id: str) -> None:
    """Print a chat's history, failed turns included; an answer's tool calls below it,
    each tool output with the id of the call it answers."""
    with open_sessions(ctx) as chats:
        for message in chats.history(chat_id, include_failed=True):
            status = "" if message.status is TurnStatus.OK else f" [red]({message.status.value}"
            if message.status is TurnStatus.REPLACED:  # kept after a regenerate
                status = " [dim](earlier answer)[/dim]"
            elif status:
                status += f": {escape(message.error or '')})[/red]"
            if message.tool_call_id is not None:  # an output names the call it answers
                status += f" [dim](output of {escape(message.tool_call_id)})[/dim]"
            console.print(f"[bold]{message.role.value}[/bold]{status}: ", end="")
            console.out(message.content, highlight=False)
            for call in message.tool_calls or ():
                console.print(f"  [cyan]calls[/cyan] {escape(call.name)}", end="")
                console.out(f"({call.arguments}) [{call.id}]", highlight=False)


@app.command("rm")
def remove(ctx: typer.Context, chat_ids: list[str]) -> None:
    """Delete chats and all their messages."""
    with open_sessions(ctx) as chats:
        for chat_id in chat_ids:
            chats.delete_chat(chat_id)
            console.print(f"deleted {chat_id}", highlight=False)


@app.command()
def archive(
    ctx: typer.Context,
    chat_ids: list[str],
    undo: Annotated[bool, typer.Option("--undo", help="unarchive instead")] = False,
) -> None:
    """Archive chats: hidden from `list` (see --include-archived), still usable."""
    with open_sessions(ctx) as chats:
        for chat_id in chat_ids:
            if undo:
                chats.unarchive_chat(chat_id)
                console.print(f"unarchived {chat_id}", highlight=False)
            else:
                chats.archive_chat(chat_id)
                console.print(f"archived {chat_id}", highlight=False)
