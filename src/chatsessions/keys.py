"""API keys as a resource of the public API: ``sessions.keys.create/list/revoke/verify``.

A key acts as one tenant. The secret is shown once, when it is created; only its SHA-256
is stored, so a leaked database does not leak working keys. The service's authenticator
and ``chatsessions keys`` both go through this, not through the store.
"""

from __future__ import annotations

import builtins
import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from chatsessions.errors import InvalidInput
from chatsessions.store import Store
from chatsessions.types import ApiKey
from chatsessions.validation import check_label

T = TypeVar("T")

#: every secret starts with this, so a leaked one is easy to recognise (secret scanners)
KEY_PREFIX = "cs_"
MAX_TENANT_CHARS = 64
MAX_KEY_NAME_CHARS = 200


def hash_key(secret: str) -> str:
    """What the database holds for ``secret``."""
    return hashlib.sha256(secret.encode()).hexdigest()


class AsyncApiKeys:
    """The API keys of the store behind an :class:`AsyncChatSessions` (every tenant's:
    managing keys is an administrator's job, not a tenant's)."""

    def __init__(self, ready: Callable[[], Awaitable[Store]]) -> None:
        self._ready = ready

    async def create(self, tenant_id: str, name: str | None = None) -> tuple[ApiKey, str]:
        """Store a new key acting as ``tenant_id``; return its record and the secret, which
        cannot be shown again."""
        tenant_id = check_label(tenant_id, field="tenant", max_chars=MAX_TENANT_CHARS)
        if not tenant_id.strip():
            raise InvalidInput(f"tenant must be 1 to {MAX_TENANT_CHARS} characters")
        if name is not None:
            name = check_label(name, field="key name", max_chars=MAX_KEY_NAME_CHARS)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(id=uuid.uuid4().hex[:12], tenant_id=tenant_id, key_hash=hash_key(secret),
                     name=name)
        store = await self._ready()
        await store.add_api_key(key)
        return key, secret

    async def list(
        self, tenant_id: str | None = None, *, include_revoked: bool = True
    ) -> builtins.list[ApiKey]:
        """Keys, oldest first: every tenant's, or ``tenant_id``'s only (records, never
        secrets)."""
        store = await self._ready()
        return [key for key in await store.list_api_keys()
                if (tenant_id is None or key.tenant_id == tenant_id)
                and (include_revoked or key.revoked_at is None)]

    async def revoke(self, key_id: str) -> bool:
        """Refuse the key from now on; False if there is no active key with this id."""
        store = await self._ready()
        return await store.revoke_api_key(key_id)

    async def verify(self, secret: str) -> ApiKey | None:
        """The active key this secret belongs to (its ``tenant_id`` is who the caller
        is), or None for an unknown or revoked one."""
        if not secret.startswith(KEY_PREFIX):  # not one of ours: no need to ask the database
            return None
        store = await self._ready()
        return await store.find_api_key(hash_key(secret))

    async def any_active(self) -> bool:
        """Whether any key is active: without one, a service runs in single-user mode."""
        store = await self._ready()
        return await store.has_api_keys()


class Runner(Protocol):
    """Runs a coroutine to its result from synchronous code (the sync facade's loop)."""

    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


class ApiKeys:
    """:class:`AsyncApiKeys`, synchronously (``ChatSessions().keys``)."""

    def __init__(self, aio: AsyncApiKeys, run: Runner) -> None:
        self.aio = aio
        self._run = run

    def create(self, tenant_id: str, name: str | None = None) -> tuple[ApiKey, str]:
        """Store a new key acting as ``tenant_id``; return its record and the secret, which
        cannot be shown again."""
        return self._run(self.aio.create(tenant_id, name))

    def list(
        self, tenant_id: str | None = None, *, include_revoked: bool = True
    ) -> builtins.list[ApiKey]:
        """Keys, oldest first: every tenant's, or ``tenant_id``'s only (records, never
        secrets)."""
        return self._run(self.aio.list(tenant_id, include_revoked=include_revoked))

    def revoke(self, key_id: str) -> bool:
        """Refuse the key from now on; False if there is no active key with this id."""
        return self._run(self.aio.revoke(key_id))

    def verify(self, secret: str) -> ApiKey | None:
        """The active key this secret belongs to (its ``tenant_id`` is who the caller
        is), or None for an unknown or revoked one."""
        return self._run(self.aio.verify(secret))

    def any_active(self) -> bool:
        """Whether any key is active: without one, a service runs in single-user mode."""
        return self._run(self.aio.any_active())
