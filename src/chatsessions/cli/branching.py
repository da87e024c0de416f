"""Branches of a chat: fork, edit, regenerate, retry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import typer
from rich.markup import escape

from chatsessions import BackendError, Message, ToolCallDelta
from chatsessions.cli.common import console, err_console, open_sessions

app = typer.Typer()

Stream = Annotated[bool, typer.Option(help="print the answer as it arrives")]


def _print_answer(items: Iterator[str | ToolCallDelta | Message]) -> None:
    for item in items:
        if isinstance(item, str):
            console.out(item, end="", highlight=False)
    console.out("")


@app.command()
def fork(
    ctx: typer.Context,
    chat_id: str,
    at: Annotated[int | None, typer.Option(
        "--at", min=0, help="copy messages up to this seq (default: all)")] = None,
) -> None:
    """Copy a chat (its ok messages up to --at) into a new one and print the new id."""
    with open_sessions(ctx) as chats:
        console.out(chats.fork_chat(chat_id, up_to_seq=at), highlight=False)


@app.command()
def edit(ctx: typer.Context, chat_id: str, seq: int, text: str) -> None:
    """Ask TEXT instead of user message SEQ, in a new chat forked just before it.

    Prints the new chat's id, then its answer; the chat itself is not changed."""
    with open_sessions(ctx) as chats:
        try:
            fork_id, answer = chats.edit_message(chat_id, seq, text)
        except BackendError as exc:
            if exc.chat_id is None:
                raise
            err_console.print(
                f"[red]error:[/red] {escape(str(exc))}\nthe edited message is kept in chat "
                f"{exc.chat_id}: 'chatsessions retry {exc.chat_id}' asks it again",
                highlight=False)
            raise typer.Exit(5) from None
    console.out(fork_id, highlight=False)
    console.out(answer.content, highlight=False)


@app.command()
def regenerate(ctx: typer.Context, chat_id: str, stream: Stream = False) -> None:
    """Answer the chat's last user message again and print the new answer.

    The earlier answer is kept as an alternative (`show` lists it as an earlier answer)."""
    with open_sessions(ctx) as chats:
        if stream:
            _print_answer(chats.stream_regenerate(chat_id))
        else:
            console.out(chats.regenerate(chat_id).content, highlight=False)


@app.command()
def retry(ctx: typer.Context, chat_id: str, stream: Stream = False) -> None:
    """Ask the chat's last user message again if its turn failed; print the answer."""
    with open_sessions(ctx) as chats:
        if stream:
            _print_answer(chats.stream_retry(chat_id))
        else:
            console.out(chats.retry(chat_id).content, highlight=False)
