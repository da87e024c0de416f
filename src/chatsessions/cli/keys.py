"""``chatsessions keys``: API keys for tenants (only their hashes are stored)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from chatsessions.cli.app import app, console
from chatsessions.config import Settings
from chatsessions.errors import InvalidInput
from chatsessions.service.auth import create_key
from chatsessions.store import Store, open_store

keys_app = typer.Typer(help="Manage API keys (one tenant per key or several keys per tenant).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


async def _with_store(ctx: typer.Context) -> Store:
    settings = Settings(**(ctx.obj or {}))
    store = open_store(settings.database_url)
    await store.open()
    return store


@keys_app.command("create")
def create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="the tenant this key acts as")],
    name: Annotated[str | None, typer.Option(help="a label for the key")] = None,
) -> None:
    """Create a key and print it once: it cannot be shown again."""
    if not tenant.strip() or len(tenant) > 64:
        raise InvalidInput("tenant must be 1 to 64 characters")

    async def run() -> str:
        store = await _with_store(ctx)
        try:
            _, secret = await create_key(store, tenant, name)
            return secret
        finally:
            await store.close()

    console.out(asyncio.run(run()))


@keys_app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """List keys (ids, tenants, names; never the secrets)."""

    async def run() -> None:
        store = await _with_store(ctx)
        try:
            table = Table("id", "tenant", "name", "created", "revoked")
            for key in await store.list_api_keys():
                table.add_row(key.id, key.tenant_id, key.name or "",
                              key.created_at.strftime("%Y-%m-%d %H:%M"),
                              key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "")
            console.print(table)
        finally:
            await store.close()

    asyncio.run(run())


@keys_app.command("revoke")
def revoke(ctx: typer.Context, key_id: str) -> None:
    """Revoke a key by id; requests with it are refused from then on."""

    async def run() -> bool:
        store = await _with_store(ctx)
        try:
            return await store.revoke_api_key(key_id)
        finally:
            await store.close()

    if not asyncio.run(run()):
        raise InvalidInput(f"no active key with id {key_id}")
    console.print(f"revoked {key_id}")
