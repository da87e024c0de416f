"""The sessions' shared state and plumbing: the runtime (store, model calls, cache) this
tenant's view works on, and the housekeeping every layer above relies on."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from chatsessions.backends import Backend
from chatsessions.config import Settings
from chatsessions.engine.runtime import Runtime
from chatsessions.engine.structured import FormatSpec, parse_answer, parse_into
from chatsessions.store import Store
from chatsessions.types import (
    ContextPolicy,
    Message,
    ResponseFormat,
    Role,
    ToolCallDelta,
    utcnow,
)
from chatsessions.validation import check_context_policy, check_text

_UNSET: Any = object()


class SessionsCore:
    """The runtime this view works on, and what every layer above needs."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        backend: Backend | str | None = None,
        tenant_id: str = "default",
        _runtime: Runtime | None = None,
        **overrides: Any,
    ) -> None:
        self.tenant_id = tenant_id
        if _runtime is not None:  # another tenant's view of the same runtime
            self._runtime = _runtime
            return
        if isinstance(backend, str):  # the setting's name, not a backend object
            overrides["backend"] = backend
            backend = None
        if settings is None:
            settings = Settings(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        self._runtime = Runtime(settings, store, backend)

    @property
    def settings(self) -> Settings:
        return self._runtime.settings

    async def _ready(self) -> Store:
        runtime = self._runtime
        if not runtime.opened:
            await runtime.open()
        return runtime.store

    def _check_system_prompt(self, value: str) -> str:
        return check_text(value, field="system_prompt",
                          max_chars=self.settings.max_message_chars, allow_empty=True)

    def get_backend(self, name: str | None = None) -> Backend:
        """The backend object chats use: the default one, or the one called ``name``."""
        return self._runtime.models.backend(name)

    async def ping(self) -> None:
        """A health check: return once the database has answered a trivial query; raise
        (the driver's error) if it cannot."""
        store = await self._ready()
        await store.ping()

    async def sweep(self) -> int:
        """Housekeeping for long-running services: fail turns orphaned by dead replicas
        (lease expired, or the holder's process gone from this host), forget expired
        idempotency keys, and delete expired chats (of every tenant) with their messages.
        Returns turns failed."""
        store = await self._ready()
        await self._runtime.leases.release_leaked()  # a database outage's leftovers
        failed = await store.recover_pending(await self._runtime.dead_owners(),
                                             alive=self._runtime.owner)
        await store.fail_abandoned_runs(utcnow())
        cutoff = utcnow() - timedelta(hours=self.settings.idempotency_ttl_hours)
        await store.expire_idempotency_keys(cutoff)
        for chat_id in await store.delete_expired(utcnow()):
            self._runtime.cache.discard(chat_id)
        return failed

    async def lead_sweeps(self) -> bool:
        """Whether this process is the one, of all sharing the database, that should run
        periodic sweeps (the service asks before each): it takes the role if it is free
        and keeps it until it exits or loses its database connection. PostgreSQL: an
        advisory lock, across workers and replicas; SQLite: a lock file beside the
        database."""
        store = await self._ready()
        return await store.lead_sweeps()


async def _stored(turn: AsyncGenerator[str | ToolCallDelta | Message, None]) -> Message:
    """Run a turn that yields no deltas to its end: the stored answer it yields last."""
    answer: Message | None = None
    async with aclosing(turn):
        async for item in turn:
            if isinstance(item, Message):
                answer = item
    assert answer is not None
    return answer


async def _parsing(run: AsyncGenerator[Any, None], fmt: ResponseFormat,
                   spec: FormatSpec | None) -> AsyncGenerator[Any, None]:
    """``run``, its final text answer given back with ``parsed`` read against ``fmt``
    (into ``spec`` when that is a pydantic model class). An answer that calls tools is
    not the final one, and is passed on as it is."""
    async with aclosing(run):
        async for item in run:
            if (isinstance(item, Message) and item.role is Role.ASSISTANT
                    and not item.tool_calls and fmt.structured):
                item = replace(item, parsed=(
                    parse_into(spec, item.content)
                    if isinstance(spec, type) and issubclass(spec, BaseModel)
                    else parse_answer(fmt, item.content)))
            yield item


def _policy(value: ContextPolicy | str | None) -> ContextPolicy | None:
    return None if value is None else check_context_policy(value)
