"""One turn at a time per chat, within a process and across replicas.

In-process, a FIFO asyncio lock queues sends in arrival order. Across processes sharing a
database, the chat row carries a lease (owner + expiry) taken with one conditional UPDATE
and renewed while the model works, so a replica that dies blocks its chats for at most
one lease period, or not at all where its death is known (a holder on this host whose
process is gone: ``holders.is_dead``). Both waits share one deadline, after which the
caller gets ``ChatBusy``.

A turn on a chat this process answered last may start with the lease only *presumed*: its
first write takes the lease and appends the user message in one statement pair, on the
condition that the chat is as this process last saw it (see ``Store.begin_turn``); only
if it is not does the turn fall back to :meth:`TurnLeases.take`. That saves one write
transaction of three on the common path. Likewise the turn's last write releases the
lease in its own transaction. :meth:`TurnLeases.take_with` and
:meth:`TurnLeases.release_with` are the only ways a write takes or releases a lease.

When the database goes away mid-turn, whether a lease write happened is unknown, and its
release cannot be written: such chats are remembered (``leaked``) and their leases
released by the next turn on the chat here or by the periodic sweep, whichever comes
first, so the chat is neither blocked for a lease period nor its pending message left
waiting for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from chatsessions.engine.locks import ChatLocks
from chatsessions.errors import ChatBusy, ChatNotFound, DatabaseUnavailable
from chatsessions.store import Store
from chatsessions.types import Chat, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class Lease:
    chat: Chat
    owner: str
    #: set by :meth:`TurnLeases.release_with`: the turn's last write released the lease
    released: bool = False
    #: False while the lease is only presumed: nothing is held in the database yet
    taken: bool = True
    deadline: float = 0.0
    renewer: asyncio.TimerHandle | asyncio.Task[None] | None = None


def poll_pauses(rng: random.Random | None = None) -> Iterator[float]:
    """The pauses of a turn waiting for a chat another replica holds: 5-10 ms at first,
    so a chat freed at once is taken at once; doubling to at most 250 ms, so a chat is
    taken within a quarter second of its release without hammering the database; each
    jittered down by up to half, so waiters that met at once do not poll in step."""
    uniform = (rng or random).uniform
    pause = 0.01
    while True:
        yield pause * uniform(0.5, 1.0)
        pause = min(pause * 2, 0.25)


class TurnLeases:
    def __init__(self, store: Store, owner: str, ttl: float,
                 dead: Callable[[str], bool] = lambda owner: False) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        #: whether a lease owner is known to be dead (then its lease need not expire)
        self.dead = dead
        self.locks = ChatLocks()
        #: chats whose lease we may still hold in the database though no turn of ours
        #: has them (the database went away before the release was written)
        self.leaked: set[str] = set()

    def _until(self) -> datetime:
        return utcnow() + timedelta(seconds=self.ttl)

    @contextlib.asynccontextmanager
    async def hold(
        self, chat_id: str, tenant_id: str, wait: float, *, presumed: Chat | None = None
    ) -> AsyncIterator[Lease]:
        """Hold the chat's turn: the in-process lock, then the lease, released on the way
        out unless the last write released it (:meth:`release_with`). With ``presumed``
        (the chat as this process last wrote it) the lease is not taken yet: the caller
        takes it with its first write (:meth:`take_with`), or with :meth:`take`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        async with self.locks.hold(chat_id, wait):
            if presumed is not None and presumed.tenant_id == tenant_id:
                lease = Lease(presumed, self.owner, taken=False, deadline=deadline)
            else:
                lease = await self._acquire(chat_id, tenant_id, deadline)
                self.taken(lease)
            try:
                yield lease
            finally:
                if lease.renewer is not None:
                    lease.renewer.cancel()
                if lease.taken and not lease.released:
                    try:
                        await asyncio.shield(self.store.release_lease(chat_id, self.owner))
                    except DatabaseUnavailable:  # the caller hears of it from its own
                        self.leaked.add(chat_id)  # call, if it failed; release it later

    async def take_with(
        self, lease: Lease, write: Callable[[str, datetime], Awaitable[T | None]]
    ) -> T | None:
        """Take a presumed lease by the turn's first write, which takes it in the same
        transaction (given the owner and the expiry; see ``Store.begin_turn``). None, with
        nothing written or held, if the chat is not as presumed or another replica holds
        it: then :meth:`take` it."""
        try:
            written = await write(self.owner, self._until())
        except DatabaseUnavailable:
            self.leaked.add(lease.chat.id)  # it may have been written
            raise
        if written is not None:
            self.taken(lease)
        return written

    @staticmethod
    async def release_with(lease: Lease, write: Callable[[str], Awaitable[T]]) -> T:
        """End the turn by its last write, which releases the lease in the same
        transaction (given the owner): :meth:`hold` then has nothing left to release. If
        the write fails, :meth:`hold` releases the lease on its way out."""
        written = await write(lease.owner)
        lease.released = True
        return written

    async def take(self, lease: Lease) -> None:
        """Take a presumed lease the slow way (the chat was not as presumed)."""
        taken = await self._acquire(lease.chat.id, lease.chat.tenant_id, lease.deadline)
        lease.chat = taken.chat
        self.taken(lease)

    def taken(self, lease: Lease) -> None:
        """The lease is held in the database now: keep it alive while the turn runs. A
        timer first: most turns end before the first renewal is due, and a timer costs
        far less to set and cancel than a task."""
        lease.taken = True
        loop = asyncio.get_running_loop()

        def start() -> None:
            lease.renewer = loop.create_task(self._renew(lease.chat.id))

        lease.renewer = loop.call_later(self.ttl / 3, start)

    async def release_leaked(self) -> None:
        """Release the leases the database's absence left behind (see the module's
        docstring) of chats no turn of ours holds now."""
        for chat_id in list(self.leaked):
            try:
                async with self.locks.hold(chat_id, 0):
                    await self._release_leaked(chat_id)
            except ChatBusy:
                continue  # a turn of ours has the chat: it releases the lease itself

    async def _release_leaked(self, chat_id: str) -> None:
        """Under the chat's in-process lock, where no turn of ours can hold its lease."""
        if chat_id in self.leaked:
            await self.store.release_lease(chat_id, self.owner)
            self.leaked.discard(chat_id)

    async def _acquire(self, chat_id: str, tenant_id: str, deadline: float) -> Lease:
        loop = asyncio.get_running_loop()
        pauses = poll_pauses()
        await self._release_leaked(chat_id)
        holder_checked = False
        while True:
            try:
                chat, acquired = await self.store.try_lease(
                    chat_id, tenant_id, self.owner, self._until())
            except DatabaseUnavailable:
                self.leaked.add(chat_id)  # it may have been taken
                raise
            if chat is None:
                raise ChatNotFound(chat_id)
            if acquired:
                return Lease(chat, self.owner, deadline=deadline)
            if not holder_checked:  # once: a holder known dead frees its chats at once
                holder_checked = True
                holder = await self.store.lease_holder(chat_id)
                if holder is not None and self.dead(holder):
                    log.warning("lease holder %s is gone: its turns are failed", holder)
                    await self.store.recover_pending([holder], alive=self.owner)
                    continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ChatBusy(chat_id, retry_after=1.0)
            # Another replica has the chat: look again after a jittered backoff.
            await asyncio.sleep(min(remaining, next(pauses)))

    async def _renew(self, chat_id: str) -> None:
        while True:
            try:
                if not await self.store.renew_lease(chat_id, self.owner, self._until()):
                    log.warning("lost the turn lease of chat %s", chat_id)
                    return
            except DatabaseUnavailable:  # logged once per outage by the store
                pass
            except Exception:  # the store hiccuped: try again at the next period
                log.exception("could not renew the turn lease of chat %s", chat_id)
            await asyncio.sleep(self.ttl / 3)
