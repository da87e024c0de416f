"""Who is calling: a key maps to a tenant; no active key means single-user mode.

Keys are the library's resource (``sessions.keys``, only their SHA-256 stored). Lookups
are cached here for a few seconds so a busy service does not hit the database on every
request, while revocations still apply soon.
"""

from __future__ import annotations

import hashlib
import time

from chatsessions import ApiKey, AsyncApiKeys
from chatsessions.service.errors import ServiceError

SINGLE_USER_TENANT = "default"
CACHE_SECONDS = 5.0
#: secrets remembered at most (then forgotten all at once): bounds what junk tokens cost
CACHE_ENTRIES = 10_000


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
    def __init__(self, keys: AsyncApiKeys, rate_limit_per_minute: int = 0) -> None:
        self._keys = keys
        self._limiter = RateLimiter(rate_limit_per_minute)
        self._keys_exist: tuple[bool, float] = (False, 0.0)
        self._by_digest: dict[bytes, tuple[ApiKey | None, float]] = {}

    async def _keys_configured(self) -> bool:
        value, expires = self._keys_exist
        if time.monotonic() >= expires:
            value = await self._keys.any_active()
            self._keys_exist = (value, time.monotonic() + CACHE_SECONDS)
        return value

    async def _lookup(self, secret: str) -> ApiKey | None:
        # remembered by digest: the process keeps no secrets longer than a request
        digest = hashlib.sha256(secret.encode()).digest()
        cached = self._by_digest.get(digest)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        key = await self._keys.verify(secret)
        if len(self._by_digest) > CACHE_ENTRIES:
            self._by_digest.clear()
        self._by_digest[digest] = (key, time.monotonic() + CACHE_SECONDS)
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
