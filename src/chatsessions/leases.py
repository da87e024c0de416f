"""One turn at a time per chat, within a process and across replicas.

In-process, a FIFO asyncio lock queues sends in arrival order. Across processes sharing a
database, the chat row carries a lease (owner + expiry) taken with one conditional UPDATE
and renewed while the model works, so a replica that dies blocks its chats for at most
one lease period. Both waits share one deadline, after which the caller gets ``ChatBusy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from chatsessions.errors import ChatBusy, ChatNotFound
from chatsessions.locks import ChatLocks
from chatsessions.store import Store
from chatsessions.types import Chat, utcnow

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Lease:
    chat: Chat
    owner: str
    #: set once the store released the lease as part of the turn's last write
    released: bool = False


class TurnLeases:
    def __init__(self, store: Store, owner: str, ttl: float) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self.locks = ChatLocks()

    def _until(self) -> datetime:
        return utcnow() + timedelta(seconds=self.ttl)

    @contextlib.asynccontextmanager
    async def hold(self, chat_id: str, tenant_id: str, wait: float) -> AsyncIterator[Lease]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        async with self.locks.hold(chat_id, wait):
            lease = await self._acquire(chat_id, tenant_id, deadline)
            renewer = asyncio.create_task(self._renew(chat_id))
            try:
                yield lease
            finally:
                renewer.cancel()
                if not lease.released:
                    await asyncio.shield(self.store.release_lease(chat_id, self.owner))

    async def _acquire(self, chat_id: str, tenant_id: str, deadline: float) -> Lease:
        loop = asyncio.get_running_loop()
        pause = 0.01
        while True:
            chat, acquired = await self.store.try_lease(
                chat_id, tenant_id, self.owner, self._until())
            if chat is None:
                raise ChatNotFound(chat_id)
            if acquired:
                return Lease(chat, self.owner)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ChatBusy(chat_id, retry_after=1.0)
            # Another replica has the chat: poll with jittered backoff.
            await asyncio.sleep(min(remaining, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, 0.25)

    async def _renew(self, chat_id: str) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await self.store.renew_lease(chat_id, self.owner, self._until()):
                    log.warning("lost the turn lease of chat %s", chat_id)
                    return
            except Exception:  # the store hiccuped: try again at the next period
                log.exception("could not renew the turn lease of chat %s", chat_id)
