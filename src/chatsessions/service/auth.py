"""API keys and tenants: a key maps to a tenant; no active key means single-user mode.

Only the SHA-256 of a key is stored. Lookups are cached for a few seconds so a busy
service does not hit the database on every request, while revocations still apply soon.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

from chatsessions.service.errors import ServiceError
from chatsessions.store import Store
from chatsessions.types import ApiKey

KEY_PREFIX = "cs_"
SINGLE_USER_TENANT = "default"
CACHE_SECONDS = 5.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(store: Store, tenant_id: str, name: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key for ``tenant_id``; return it with the secret (shown once)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=uuid.uuid4().hex[:12], tenant_id=tenant_id, key_hash=hash_key(secret),
                 name=name)
    await store.add_api_key(key)
    return key, secret


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests, bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, last = self._buckets.get(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        if tokens < 1.0:
            wait = (1.0 - tokens) / rate
            self._buckets[key] = (tokens, now)
            raise ServiceError(429, "rate_limited",
                               f"rate limit of {self.per_minute} requests per minute reached",
                               {"Retry-After": str(max(1, round(wait + 0.5)))})
        self._buckets[key] = (tokens - 1.0, now)


class Authenticator:
    def __init__(self, store: Store, rate_limit_per_minute: int = 0) -> None:
        self._store = store
        self._limiter = RateLimiter(rate_limit_per_minute)
        self._keys_exist: tuple[bool, float] = (False, 0.0)
        self._by_hash: dict[str, tuple[ApiKey | None, float]] = {}

    async def _keys_configured(self) -> bool:
        value, expires = self._keys_exist
        if time.monotonic() >= expires:
            value = await self._store.has_api_keys()
            self._keys_exist = (value, time.monotonic() + CACHE_SECONDS)
        return value

    async def _lookup(self, secret: str) -> ApiKey | None:
        digest = hash_key(secret)
        cached = self._by_hash.get(digest)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        key = await self._store.find_api_key(digest)
        if len(self._by_hash) > 10_000:
            self._by_hash.clear()
        self._by_hash[digest] = (key, time.monotonic() + CACHE_SECONDS)
        return key

    async def tenant_for(self, token: str | None) -> str:
        """The caller's tenant; raises 401 when keys are configured and none is valid."""
        if not await self._keys_configured():
            self._limiter.check(SINGLE_USER_TENANT)
            return SINGLE_USER_TENANT
        if not token:
            raise ServiceError(401, "unauthorized",
                               "an API key is required: send 'Authorization: Bearer KEY'",
                               {"WWW-Authenticate": "Bearer"})
        key = await self._lookup(token)
        if key is None:
            raise ServiceError(401, "unauthorized", "invalid or revoked API key",
                               {"WWW-Authenticate": "Bearer"})
        self._limiter.check(key.id)
        return key.tenant_id
