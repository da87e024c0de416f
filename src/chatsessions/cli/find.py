"""Looking across chats: usage and cost, full-text search."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from chatsessions.cli.common import console, open_sessions

app = typer.Typer()


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("use an ISO date or date and time, e.g. 2026-01-31T12:00",
                                 param_hint=option) from None


@app.command()
def usage(
    ctx: typer.Context,
    start: Annotated[str | None, typer.Option("--from", help="ISO date/time (inclusive)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date/time (exclusive)")] = None,
) -> None:
    """Answered turns, summaries written, their tokens and cost per model (prices from
    CHATSESSIONS_PRICES)."""
    since, until = _when(start, "--from"), _when(end, "--to")
    with open_sessions(ctx) as chats:
        report = chats.usage(since, until)
    table = Table("model", "turns", "summaries", "prompt tokens", "completion tokens",
                  "cost (USD)")
    for used in report.models:
        cost = f"{used.cost:.6f}" if used.priced else "no price"
        table.add_row(escape(used.model), str(used.turns), str(used.summaries),
                      str(used.prompt_tokens), str(used.completion_tokens), cost)
    table.add_section()
    table.add_row("total", str(report.turns), str(report.summaries), str(report.prompt_tokens),
                  str(report.completion_tokens), f"{report.cost:.6f}")
    console.print(table)
    if report.unpriced:
        console.print(f"no price for: {escape(', '.join(report.unpriced))} (counted as 0)",
                      highlight=False)


@app.command()
def search(
    ctx: typer.Context,
    text: str,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """Find messages containing every word of TEXT across your chats."""
    with open_sessions(ctx) as chats:
        hits = chats.search(text, limit)
    table = Table("chat", "seq", "role", "when", "snippet")
    for hit in hits:
        table.add_row(hit.chat_id, str(hit.seq), hit.role.value,
                      hit.created_at.strftime("%Y-%m-%d %H:%M"), escape(hit.snippet))
    console.print(table)
