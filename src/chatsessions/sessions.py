"""AsyncChatSessions: the public async API.

The class is assembled from layers in ``_sessions/``, one topic per module, each built on
the one below it: ``core`` (the runtime, housekeeping), ``chats`` (chats as records),
``history`` (messages outside turns, fork, export and import, search, usage),
``answers`` (answers not stored, stateless completions), ``tools`` (tool rounds and the
loop that runs Python functions) and ``turns`` (send, stream, retry, regenerate, edit).
Here: the lifecycle and the resources beside the chats. The turn itself lives in
``engine/turn.py``.
"""

from __future__ import annotations

from chatsessions._sessions.turns import TurnMethods
from chatsessions.engine.titles import TITLE_GRACE
from chatsessions.keys import AsyncApiKeys
from chatsessions.runs import AsyncRuns


class AsyncChatSessions(TurnMethods):
    """Many durable conversations with a model; the async API.

    ``AsyncChatSessions()`` uses SQLite and the embedded model unless configured
    otherwise (keyword arguments take the names of :class:`Settings`). Each instance is a
    view on one tenant; :meth:`for_tenant` gives another tenant's view of the same store.
    """

    def for_tenant(self, tenant_id: str) -> AsyncChatSessions:
        """The view of another tenant on the same store, backends and cache (opened and
        closed with this one)."""
        return AsyncChatSessions(tenant_id=tenant_id, _runtime=self._runtime)

    async def open(self) -> None:
        """Connect, migrate, and fail turns a previous crash left pending."""
        await self._runtime.open()

    async def close(self, *, title_grace: float = TITLE_GRACE) -> None:
        """Close the store and backends, after waiting up to ``title_grace`` seconds for
        automatic titles still being written (the rest are cancelled: no title, no harm)."""
        await self._runtime.close(title_grace)

    async def __aenter__(self) -> AsyncChatSessions:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def keys(self) -> AsyncApiKeys:
        """API keys as a resource (every tenant's): create, list, revoke, verify."""
        return AsyncApiKeys(self._ready)

    @property
    def runs(self) -> AsyncRuns:
        """Turns that outlive their caller: detached streams that can be followed again,
        and turns run in the background (see :mod:`chatsessions.runs`)."""
        return AsyncRuns(self)
