"""What the command modules share: the consoles and the sessions the options describe."""

from __future__ import annotations

import typer
from rich.console import Console

from chatsessions import ChatSessions

console = Console()
err_console = Console(stderr=True)


def open_sessions(ctx: typer.Context) -> ChatSessions:
    """The sessions for the global options (``--database-url``...) and the environment."""
    return ChatSessions(**(ctx.obj or {}))
