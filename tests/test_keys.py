"""API keys as a resource of the public API: created, listed, verified and revoked through
``sessions.keys`` (async and sync), only their SHA-256 stored, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from pathlib import Path

import asyncpg
import pytest

from chatsessions import ApiKeys, AsyncApiKeys, AsyncChatSessions, ChatSessions, InvalidInput


async def test_create_verify_list_revoke(sessions: AsyncChatSessions) -> None:
    assert not await sessions.keys.any_active()
    key, secret = await sessions.keys.create("acme", "ci")
    other, other_secret = await sessions.keys.create("globex")
    assert secret.startswith("cs_")
    assert len(secret) > 40
    assert secret != other_secret
    assert key.id != other.id
    assert (key.tenant_id, key.name, key.revoked_at) == ("acme", "ci", None)
    assert await sessions.keys.any_active()

    assert await sessions.keys.verify(secret) == key
    assert (await sessions.keys.verify(other_secret)).tenant_id == "globex"  # type: ignore[union-attr]
    for wrong in ("", "cs_", secret + "x", secret[:-1], "not-a-key", secret.upper()):
        assert await sessions.keys.verify(wrong) is None

    assert [k.id for k in await sessions.keys.list()] == [key.id, other.id]
    assert [k.id for k in await sessions.keys.list("globex")] == [other.id]
    assert await sessions.keys.list("nobody") == []

    assert await sessions.keys.revoke(key.id)
    assert not await sessions.keys.revoke(key.id)  # already revoked
    assert not await sessions.keys.revoke("no-such-id")
    assert await sessions.keys.verify(secret) is None
    listed = {k.id: k for k in await sessions.keys.list()}
    assert listed[key.id].revoked_at is not None
    assert [k.id for k in await sessions.keys.list(include_revoked=False)] == [other.id]
    assert await sessions.keys.any_active()
    assert await sessions.keys.revoke(other.id)
    assert not await sessions.keys.any_active()


async def test_keys_are_shared_by_tenant_views_and_survive_a_restart(
    settings_kwargs: dict[str, object],
) -> None:
    async with AsyncChatSessions(**settings_kwargs) as first:  # type: ignore[arg-type]
        key, secret = await first.for_tenant("acme").keys.create("acme")
    async with AsyncChatSessions(**settings_kwargs) as again:  # type: ignore[arg-type]
        assert (await again.keys.verify(secret)) == key


def test_only_the_hash_reaches_the_database(database_url: str) -> None:
    with ChatSessions(database_url=database_url) as chats:
        _, secret = chats.keys.create("acme", "ci")
    if database_url.startswith("sqlite"):
        assert secret.encode() not in Path(database_url.removeprefix("sqlite:///")).read_bytes()
        return

    async def stored() -> list[str]:
        conn = await asyncpg.connect(database_url.replace("postgresql://", "postgres://", 1))
        try:
            return [row["key_hash"] for row in await conn.fetch("SELECT key_hash FROM api_keys")]
        finally:
            await conn.close()

    assert asyncio.run(stored()) == [hashlib.sha256(secret.encode()).hexdigest()]


@pytest.mark.parametrize(("tenant", "name"), [
    ("", None), ("   ", None), ("t" * 65, None), ("a\nb", None), ("a\x00b", None),
    ("acme", "line\nbreak"), ("acme", "n" * 201),
])
async def test_bad_tenants_and_names_are_refused(
    sessions: AsyncChatSessions, tenant: str, name: str | None
) -> None:
    with pytest.raises(InvalidInput):
        await sessions.keys.create(tenant, name)
    assert await sessions.keys.list() == []


def test_the_sync_keys_work_the_same(database_url: str) -> None:
    with ChatSessions(database_url=database_url) as chats:
        key, secret = chats.keys.create("acme", "ci")
        assert chats.keys.any_active()
        assert chats.keys.verify(secret) == key
        assert [k.id for k in chats.keys.list("acme")] == [key.id]
        assert chats.keys.revoke(key.id)
        assert chats.keys.verify(secret) is None
        assert not chats.keys.any_active()


def test_the_sync_keys_mirror_the_async_ones() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {name: inspect.signature(member) for name, member in vars(cls).items()
                if inspect.isfunction(member) and not name.startswith("_")}

    async_side, sync_side = public(AsyncApiKeys), public(ApiKeys)
    assert async_side.keys() == sync_side.keys()
    for name, signature in async_side.items():
        assert signature.parameters == sync_side[name].parameters, name
        assert signature.return_annotation == sync_side[name].return_annotation, name
        assert inspect.getdoc(getattr(AsyncApiKeys, name)) == inspect.getdoc(
            getattr(ApiKeys, name)), name
