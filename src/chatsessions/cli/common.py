"""Helpers the command modules share."""

from __future__ import annotations

import typer

from chatsessions.sync import ChatSessions


def open_sessions(ctx: typer.Context) -> ChatSessions:
    return ChatSessions(**(ctx.obj or {}))
