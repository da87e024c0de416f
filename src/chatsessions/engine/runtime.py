"""What one AsyncChatSessions shares across its tenant views: the store, the model
calls (backends and their circuits), turn leases, the history cache and the titles."""

from __future__ import annotations

import asyncio

from chatsessions.backends import Backend
from chatsessions.config import Settings
from chatsessions.engine import holders
from chatsessions.engine.background import BackgroundRuns
from chatsessions.engine.cache import History, HistoryCache, chat_entry_bytes
from chatsessions.engine.leases import TurnLeases
from chatsessions.engine.live import LiveTurns
from chatsessions.engine.model_call import ModelCalls
from chatsessions.engine.titles import TitleWriter
from chatsessions.engine.tools import FunctionTool
from chatsessions.store import Store, open_store
from chatsessions.types import Chat, TurnStatus, utcnow


class Runtime:
    """Opens and closes itself: the store (migrated, with the turns a crash left pending
    failed), the backends, the background titles."""

    def __init__(self, settings: Settings, store: Store | None, backend: Backend | None) -> None:
        self.settings = settings
        self.store: Store = store or open_store(
            settings.database_url, synchronous=settings.sqlite_synchronous
        )
        self.models = ModelCalls(settings, backend)
        self.cache = HistoryCache(settings.cache_bytes)
        # One lease owner per runtime of a process: several workers may share a replica
        # id; its name tells who holds a lease and lets this host see that it died.
        self.replica = settings.replica_id or holders.default_replica_id(
            settings.database_url)
        self.owner = holders.new_owner(self.replica)
        self.leases = TurnLeases(
            self.store, self.owner, settings.lease_ttl,
            dead=lambda owner: holders.is_dead(owner, self.owner, starting=False))
        self.titles = TitleWriter(self.store, self.models, enabled=settings.auto_title)
        #: Python functions given as a chat's tools, by chat id and tool name: only their
        #: definitions are stored, so they run only in the process that was given them
        self.functions: dict[str, dict[str, FunctionTool]] = {}
        #: the seq the answer will get, by chat, of each turn here calling its model (the
        #: question, and any summary, stored): a reader of its deltas need not ask storage
        self.answering: dict[str, int] = {}
        self.live = LiveTurns()
        self.background = BackgroundRuns(self.store, self.live, self.owner, settings.lease_ttl)
        self._opened = False
        self._open_lock = asyncio.Lock()

    @property
    def opened(self) -> bool:
        return self._opened

    async def open(self) -> None:
        """Connect, migrate, and fail turns a previous crash left pending (once)."""
        async with self._open_lock:
            if not self._opened:
                holders.opened(self.owner)
                await self.store.open()
                dead = await self.dead_owners(starting=True)
                await self.store.recover_pending(dead)
                await self.store.fail_abandoned_runs(utcnow(), dead)
                self._opened = True

    async def close(self, title_grace: float) -> None:
        """Wait up to ``title_grace`` seconds for titles being written (cancel the rest),
        then close the backends and the store. Opening again starts afresh."""
        await self.titles.drain(title_grace)
        await self.live.close()  # turns still running detached fail as interrupted
        await self.background.close()
        async with self._open_lock:
            await self.models.aclose()
            await self.store.close()
            holders.closed(self.owner)
            self._opened = False

    async def dead_owners(self, *, starting: bool = False) -> list[str]:
        """Holders of leases still in the database that are known to be dead: on this
        host, processes gone (or runtimes of this process closed); when ``starting``,
        also this replica's earlier incarnations (``holders.is_dead``)."""
        return [owner for owner in await self.store.lease_owners("")
                if holders.is_dead(owner, self.owner, starting=starting)]

    def presumed_chat(self, chat_id: str) -> Chat | None:
        """The chat as this process's last turn on it left it, if still cached (its
        history version included: ``Store.begin_turn`` checks it)."""
        entry = self.cache.get(chat_id)
        return entry.chat if entry is not None else None

    def _cached(self, chat: Chat) -> History | None:
        """The cached entry of ``chat``, unless it was read at another history version
        (someone changed more than appended since): then it is dropped."""
        entry = self.cache.get(chat.id)
        if entry is not None and entry.version != chat.history_version:
            self.cache.discard(chat.id)
            return None
        return entry

    def created(self, chat: Chat) -> None:
        """A chat this process has just written, with no messages: its first turn presumes
        it as written and its history empty, so it reads nothing before calling the model
        (were the chat changed meanwhile, that turn's first write finds out and it looks
        again, as for any presumed chat)."""
        self.cache.put(chat.id, History(chat=chat, version=chat.history_version,
                                        nbytes=chat_entry_bytes(chat)))

    async def visible_history(self, chat: Chat) -> History:
        """The chat's ok messages, from the cache, reading only rows it has not seen
        (all of them if the chat's history version is not the cached one).

        Called under the chat's turn lease, so a pending row read here belongs to a turn
        nobody is finishing any more (its replica died): it is failed on the spot.
        """
        entry = self._cached(chat)
        if entry is not None and entry.last_seq >= chat.message_count:
            return entry
        rows = await self.store.messages(
            chat.id, after_seq=entry.last_seq if entry is not None else 0)
        orphans = [m.seq for m in rows if m.status is TurnStatus.PENDING]
        if orphans:
            await self.store.mark_interrupted(chat.id, orphans)
        if entry is None:
            entry = History(version=chat.history_version)
            entry.add(rows)
            self.cache.put(chat.id, entry)
        else:
            self.cache.grew(chat.id, entry.add(rows))
        return entry


    async def settled_history(self, chat: Chat) -> History:
        """The chat's ok messages for a call that holds no lease and writes nothing (an
        answer not stored). A pending row may be a turn still running here or elsewhere,
        so the rows from the first pending one on are left out, and nothing read is
        failed or cached: the cached entry when current, else a copy brought up to date."""
        entry = self.cache.get(chat.id)
        if entry is not None and entry.version != chat.history_version:
            entry = None  # a turn drops it under its lease; this call only reads
        if entry is not None and entry.last_seq >= chat.message_count:
            return entry
        rows = await self.store.messages(
            chat.id, after_seq=entry.last_seq if entry is not None else 0)
        settled = next((i for i, m in enumerate(rows) if m.status is TurnStatus.PENDING),
                       len(rows))
        history = History() if entry is None else History(
            last_seq=entry.last_seq, messages=list(entry.messages), tokens=list(entry.tokens),
            shown=list(entry.shown), summaries=entry.summaries)
        history.add(rows[:settled])
        return history
