"""``chatsessions keys``: API keys for tenants (only their hashes are stored)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from chatsessions import InvalidInput
from chatsessions.cli.common import console, open_sessions

app = typer.Typer(help="Manage API keys (one tenant per key or several keys per tenant).",
                  no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="the tenant this key acts as")],
    name: Annotated[str | None, typer.Option(help="a label for the key")] = None,
) -> None:
    """Create a key and print it once: it cannot be shown again."""
    with open_sessions(ctx) as chats:
        _, secret = chats.keys.create(tenant, name)
    console.out(secret)


@app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """List keys (ids, tenants, names; never the secrets)."""
    with open_sessions(ctx) as chats:
        keys = chats.keys.list()
    table = Table("id", "tenant", "name", "created", "revoked")
    for key in keys:
        table.add_row(key.id, key.tenant_id, key.name or "",
                      key.created_at.strftime("%Y-%m-%d %H:%M"),
                      key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "")
    console.print(table)


@app.command("revoke")
def revoke(ctx: typer.Context, key_id: str) -> None:
    """Revoke a key by id; requests with it are refused from then on."""
    with open_sessions(ctx) as chats:
        if not chats.keys.revoke(key_id):
            raise InvalidInput(f"no active key with id {key_id}")
    console.print(f"revoked {key_id}")
