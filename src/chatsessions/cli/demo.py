"""The tutorial's demo: two customer-service chats side by side, two turns each."""

from __future__ import annotations

import typer

from chatsessions.cli.common import console, open_sessions
from chatsessions.prompts import DEMO_CHATS

app = typer.Typer()


@app.command()
def demo(ctx: typer.Context) -> None:
    """Run the tutorial's two customer-service chats."""
    with open_sessions(ctx) as chats:
        settings = chats.settings
        console.print(f"[dim]database: {settings.database_url}[/dim]", highlight=False)
        console.print(f"[dim]backend: {settings.backend}[/dim]", highlight=False)
        for number, (first, follow_up) in enumerate(DEMO_CHATS, start=1):
            chat_id = chats.create_chat(title=f"Demo chat {number}")
            for label, text in (("First Message", first), ("Follow-up Message", follow_up)):
                answer = chats.send_message(chat_id, text)
                console.out(f"Chat {number}, {label}: {answer}", highlight=False)
