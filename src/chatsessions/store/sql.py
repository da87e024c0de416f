"""SQL store on SQLAlchemy Core: SQLite (embedded, default) and PostgreSQL (replicas).

Each method is one transaction written as a plain function of a connection; ``engines``
decides where it runs. A turn costs a constant number of statements, whatever the
chat's length: nothing re-reads or rewrites history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chatsessions.errors import ChatExists, ChatMoved, ChatNotFound, TurnInterrupted
from chatsessions.store import search as fulltext
from chatsessions.store import statements as stmt
from chatsessions.store import title_search, usage
from chatsessions.store.engines import Database, connect, migrate
from chatsessions.store.rows import (
    TURN_FIELDS,
    bound_row,
    chat_row,
    message_row,
    storable,
    to_api_key,
    to_chat,
    to_message,
    tools_value,
    with_seq,
)
from chatsessions.store.runs import SQLRuns
from chatsessions.store.schema import api_keys, chats, messages
from chatsessions.store.turn_writes import TurnWrites, turn_writes
from chatsessions.types import (
    ApiKey,
    Chat,
    ContentPart,
    Message,
    ModelUsage,
    Role,
    SearchHit,
    TurnStatus,
    utcnow,
)

INTERRUPTED = "interrupted: the service stopped during this turn"


class SQLStore(SQLRuns):
    def __init__(self, url: str, *, synchronous: str = "NORMAL", pool_size: int = 20) -> None:
        self.url = url
        self._synchronous = synchronous
        self._pool_size = pool_size
        self._db: Database | None = None
        self._turns: TurnWrites | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    @property
    def turns(self) -> TurnWrites:
        if self._turns is None:
            raise RuntimeError("store is not open")
        return self._turns

    @property
    def dialect(self) -> str:
        return self.db.dialect

    async def open(self) -> None:
        if self._db is None:
            self._db = connect(self.url, synchronous=self._synchronous,
                               pool_size=self._pool_size, housekeeping=fulltext.catch_up)
            await migrate(self._db)
            self._turns = turn_writes(self._db)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.dispose()
            self._db = self._turns = None

    async def ping(self) -> None:
        await self.db.read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())

    async def lead_sweeps(self) -> bool:
        return await self.db.lead_sweeps()

    # chats ---------------------------------------------------------------------------

    async def create_chat(
        self, chat: Chat, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> Chat | None:
        """Insert ``chat``; None if the tenant already used ``idempotency_key``."""
        values = {**chat_row(chat), "idempotency_key": idempotency_key,
                  "request_hash": request_hash}
        try:
            await self.db.write_now(lambda conn: conn.execute(chats.insert(), values))
        except sa.exc.IntegrityError:
            # Which unique key was hit, asked of the data rather than of each dialect's
            # error text: the tenant's idempotency key (a replay, None) or the chat's id.
            if idempotency_key is not None and await self.chat_by_idempotency_key(
                    chat.tenant_id, idempotency_key) is not None:
                return None
            if await self._chat_exists(chat.id):
                raise ChatExists(chat.id) from None
            raise
        return chat

    async def _chat_exists(self, chat_id: str) -> bool:
        """Whether any tenant's chat has this id (ids are unique across tenants)."""
        query = sa.select(chats.c.id).where(chats.c.id == chat_id)
        return await self.db.read(lambda conn: conn.execute(query).first() is not None)

    async def chat_by_idempotency_key(
        self, tenant_id: str, idempotency_key: str
    ) -> tuple[Chat, str | None] | None:
        query = chats.select().where(chats.c.tenant_id == tenant_id,
                                     chats.c.idempotency_key == idempotency_key)
        row = await self.db.read(lambda conn: conn.execute(query).mappings().first())
        return (to_chat(row), row["request_hash"]) if row else None

    async def get_chat(self, chat_id: str, tenant_id: str) -> Chat | None:
        if not storable(chat_id):
            return None
        params = {"p_chat": chat_id, "p_tenant": tenant_id}
        row = await self.db.read_now(
            lambda conn: conn.execute(stmt.GET_CHAT, params).mappings().first())
        return to_chat(row) if row else None

    async def list_chats(
        self,
        tenant_id: str,
        *,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
        title_contains: str | None = None,
        metadata: dict[str, Any] | None = None,
        archived: bool | None = False,
    ) -> list[Chat]:
        query = chats.select().where(chats.c.tenant_id == tenant_id)
        if archived is not None:
            query = query.where(chats.c.archived_at.is_not(None) if archived
                                else chats.c.archived_at.is_(None))
        if before is not None:
            created, chat_id = before
            query = query.where(sa.or_(
                chats.c.created_at < created,
                sa.and_(chats.c.created_at == created, chats.c.id < chat_id),
            ))
        query = query.order_by(chats.c.created_at.desc(), chats.c.id.desc())
        dialect = self.dialect

        def run(conn: Connection) -> list[Chat]:
            def page(limit: int | None) -> Any:
                if title_contains:
                    return title_search.rows(conn, dialect, query, title_contains, limit)
                return conn.execute(query.limit(limit)).mappings()

            if not metadata:
                return [to_chat(r) for r in page(limit)]
            # Metadata filters are evaluated here so they mean the same on both engines.
            found: list[Chat] = []
            for row in page(None):
                chat = to_chat(row)
                if all(chat.metadata.get(k) == v for k, v in metadata.items()):
                    found.append(chat)
                    if len(found) >= limit:
                        break
            return found

        return await self.db.read(run)

    async def update_chat(
        self, chat_id: str, tenant_id: str, changes: dict[str, Any]
    ) -> Chat | None:
        if not storable(chat_id):
            return None
        bump = ({"history_version": chats.c.history_version + 1}
                if TURN_FIELDS & changes.keys() else {})
        if "tools" in changes:
            changes = {**changes, "tools": tools_value(changes["tools"])}
        query = (
            chats.update()
            .where(chats.c.id == chat_id, chats.c.tenant_id == tenant_id)
            .values(**changes, **bump, updated_at=utcnow())
            .returning(*chats.c)
        )
        # rows without a model of their own count under the chat's: move them along
        unnamed = sa.and_(messages.c.chat_id == chat_id, chats.c.tenant_id == tenant_id,
                          messages.c.model.is_(None))
        dialect = self.dialect

        def run(conn: Connection) -> Any:
            if "model" in changes:
                conn.execute(usage.recount(dialect, unnamed, -1))
            row = conn.execute(query).mappings().first()
            if "model" in changes and row is not None:
                conn.execute(usage.recount(dialect, unnamed))
            return row

        row = await self.db.write_now(run)
        return to_chat(row) if row else None

    async def delete_chat(self, chat_id: str, tenant_id: str) -> bool:
        if not storable(chat_id):
            return False
        dialect = self.dialect

        def run(conn: Connection) -> bool:
            owned = conn.execute(sa.select(chats.c.id).where(
                chats.c.id == chat_id, chats.c.tenant_id == tenant_id)).first()
            if owned is None:
                return False
            conn.execute(usage.recount(dialect, messages.c.chat_id == chat_id, -1))
            conn.execute(messages.delete().where(messages.c.chat_id == chat_id))
            conn.execute(chats.delete().where(chats.c.id == chat_id))
            return True

        return await self.db.write(run)

    # turns ---------------------------------------------------------------------------

    async def add_user_message(
        self, chat_id: str, content: str, *, idempotency_key: str | None = None,
        parts: tuple[ContentPart, ...] | None = None,
    ) -> Message:
        now = utcnow()

        def run(conn: Connection) -> Message:
            _unsynced(conn)
            message = Message(
                chat_id=chat_id, seq=_next_seq(conn, chat_id, now), role=Role.USER,
                content=content, status=TurnStatus.PENDING, created_at=now,
                idempotency_key=idempotency_key, parts=parts,
            )
            conn.execute(stmt.INSERT_MESSAGE, message_row(message))
            return message

        return await self.db.write_now(run)

    async def begin_turn(
        self, seen: Chat, owner: str, until: datetime, content: str, *,
        parts: tuple[ContentPart, ...] | None = None,
    ) -> Message | None:
        now = utcnow()
        message = Message(chat_id=seen.id, seq=0, role=Role.USER, content=content,
                          status=TurnStatus.PENDING, created_at=now, parts=parts)
        params = bound_row(message)
        params.update(_as_seen(seen, owner, until, now))
        seq = await self.turns.begin(params)
        return None if seq is None else with_seq(message, seq)

    async def complete_turn(
        self, user: Message, answer: Message, *, lease_owner: str | None = None
    ) -> Message:
        params = bound_row(answer)
        params.update(p_chat=user.chat_id, p_seq=user.seq, p_user_prompt=user.prompt_tokens,
                      p_prompt=answer.prompt_tokens, p_completion=answer.completion_tokens,
                      p_now=answer.created_at, p_owner=lease_owner)
        seq = await self.turns.complete(params)
        if seq is None:  # another replica declared this turn dead meanwhile
            raise TurnInterrupted(
                "this turn took longer than its lease and was failed by another replica")
        return with_seq(answer, seq)

    async def begin_round(self, seen: Chat, owner: str, until: datetime) -> bool:
        return await self.turns.begin_round(_as_seen(seen, owner, until, utcnow()))

    async def complete_round(
        self, chat_id: str, outputs: list[Message], answer: Message, *, lease_owner: str
    ) -> list[Message]:
        params = bound_row(answer)
        params.update(p_chat=chat_id, p_rows=len(outputs) + 1, p_prompt=answer.prompt_tokens,
                      p_completion=answer.completion_tokens, p_now=answer.created_at,
                      p_owner=lease_owner)
        seq = await self.turns.complete_round(params, [bound_row(o) for o in outputs])
        if seq is None:
            raise TurnInterrupted("this tool round took longer than its lease and another "
                                  "replica took the chat over")
        first = seq - len(outputs)
        return [*(with_seq(o, first + i) for i, o in enumerate(outputs)),
                with_seq(answer, seq)]

    async def fail_turn(
        self, user: Message, error: str, partial: Message | None = None, *,
        lease_owner: str | None = None,
    ) -> None:
        def run(conn: Connection) -> None:
            marked = conn.execute(stmt.MARK_FAILED, {"p_chat": user.chat_id,
                                                     "p_seq": user.seq, "p_error": error})
            if partial is not None and marked.rowcount:
                seq = _next_seq(conn, user.chat_id, partial.created_at, release=lease_owner)
                conn.execute(stmt.INSERT_MESSAGE, message_row(with_seq(partial, seq)))
            elif lease_owner is not None:
                _release(conn, user.chat_id, lease_owner)

        await self.db.write_now(run)

    async def messages(
        self, chat_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Message]:
        query = stmt.MESSAGES_AFTER if limit is None else stmt.MESSAGES_AFTER.limit(limit)
        params = {"p_chat": chat_id, "p_after": after_seq}
        return await self.db.read(
            lambda conn: [to_message(r) for r in conn.execute(query, params).mappings()])

    async def recover_pending(
        self, owners: Sequence[str] = (), *, alive: str | None = None
    ) -> int:
        """Fail pending turns nobody can still finish: in chats whose lease is free, expired,
        or held by one of ``owners`` (processes known to be dead), and release those leases.
        Leases of ``alive`` (the calling process) count as held even when overdue: a busy
        process renews late, it has not died.
        """
        expired = chats.c.lease_expires_at < utcnow()
        if alive is not None:
            expired = sa.and_(expired, chats.c.lease_owner != alive)
        free = [chats.c.lease_owner.is_(None), expired]
        if owners:
            free.append(chats.c.lease_owner.in_(list(owners)))
        orphaned = sa.select(chats.c.id).where(sa.or_(*free))

        def run(conn: Connection) -> int:
            result = conn.execute(
                messages.update()
                .where(messages.c.status == TurnStatus.PENDING.value,
                       messages.c.chat_id.in_(orphaned))
                .values(status=TurnStatus.FAILED.value, error=INTERRUPTED)
            )
            if owners:
                conn.execute(chats.update().where(chats.c.lease_owner.in_(list(owners)))
                             .values(lease_owner=None, lease_expires_at=None))
            return int(result.rowcount or 0)

        return await self.db.write(run)

    async def lease_owners(self, prefix: str) -> list[str]:
        query = (sa.select(chats.c.lease_owner).distinct()
                 .where(chats.c.lease_owner.startswith(prefix, autoescape=True)))
        return await self.db.read(lambda conn: [row[0] for row in conn.execute(query)])

    async def mark_interrupted(self, chat_id: str, seqs: list[int]) -> None:
        query = (messages.update()
                 .where(messages.c.chat_id == chat_id, messages.c.seq.in_(seqs),
                        messages.c.status == TurnStatus.PENDING.value)
                 .values(status=TurnStatus.FAILED.value, error=INTERRUPTED))
        await self.db.write_now(lambda conn: conn.execute(query))

    # leases: one turn at a time per chat, across processes ------------------------------

    async def try_lease(
        self, chat_id: str, tenant_id: str, owner: str, until: datetime
    ) -> tuple[Chat | None, bool]:
        """Take the chat's turn lease if free or expired: (chat, True); held by someone
        else: (chat, False); no such chat for this tenant: (None, False)."""
        if not storable(chat_id):
            return None, False
        params = {"p_chat": chat_id, "p_tenant": tenant_id, "p_now": utcnow(),
                  "p_owner": owner, "p_until": until}
        row = await self.db.write_now(
            lambda conn: conn.execute(stmt.TRY_LEASE, params).mappings().first())
        if row is not None:
            return to_chat(row), True
        return await self.get_chat(chat_id, tenant_id), False

    async def lease_holder(self, chat_id: str) -> str | None:
        query = sa.select(chats.c.lease_owner).where(
            chats.c.id == chat_id, chats.c.lease_expires_at >= utcnow())
        holder: str | None = await self.db.read(lambda conn: conn.execute(query).scalar())
        return holder

    async def renew_lease(self, chat_id: str, owner: str, until: datetime) -> bool:
        params = {"p_chat": chat_id, "p_owner": owner, "p_until": until}
        return await self.db.write_now(
            lambda conn: bool(conn.execute(stmt.RENEW_LEASE, params).rowcount))

    async def release_lease(self, chat_id: str, owner: str) -> None:
        await self.db.write_now(lambda conn: _release(conn, chat_id, owner))

    # idempotency -------------------------------------------------------------------------

    async def message_by_idempotency_key(self, chat_id: str, key: str) -> Message | None:
        query = messages.select().where(messages.c.chat_id == chat_id,
                                        messages.c.idempotency_key == key)
        row = await self.db.read(lambda conn: conn.execute(query).mappings().first())
        return to_message(row) if row else None

    async def expire_idempotency_keys(self, before: datetime) -> int:
        def run(conn: Connection) -> int:
            result = conn.execute(
                messages.update()
                .where(messages.c.idempotency_key.is_not(None), messages.c.created_at < before)
                .values(idempotency_key=None)
            )
            conn.execute(
                chats.update()
                .where(chats.c.idempotency_key.is_not(None), chats.c.created_at < before)
                .values(idempotency_key=None, request_hash=None)
            )
            return int(result.rowcount or 0)

        return await self.db.write(run)

    # api keys ------------------------------------------------------------------------

    async def add_api_key(self, key: ApiKey) -> None:
        query = api_keys.insert().values(
            id=key.id, tenant_id=key.tenant_id, name=key.name, key_hash=key.key_hash,
            created_at=key.created_at, revoked_at=key.revoked_at,
        )
        await self.db.write(lambda conn: conn.execute(query))

    async def list_api_keys(self) -> list[ApiKey]:
        query = api_keys.select().order_by(api_keys.c.created_at)
        return await self.db.read(
            lambda conn: [to_api_key(r) for r in conn.execute(query).mappings()])

    async def revoke_api_key(self, key_id: str) -> bool:
        query = (api_keys.update()
                 .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                 .values(revoked_at=utcnow()))
        return await self.db.write(lambda conn: bool(conn.execute(query).rowcount))

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        query = api_keys.select().where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
        row = await self.db.read(lambda conn: conn.execute(query).mappings().first())
        return to_api_key(row) if row else None

    async def has_api_keys(self) -> bool:
        query = sa.select(api_keys.c.id).where(api_keys.c.revoked_at.is_(None)).limit(1)
        return await self.db.read(lambda conn: conn.execute(query).first() is not None)

    # history edits outside turns (conversation items, branches) -----------------------

    async def append_messages(self, chat_id: str, rows: list[Message], *,
                              lease_owner: str | None = None) -> list[Message]:
        dialect = self.dialect

        def run(conn: Connection) -> list[Message]:
            stored = []
            for index, row in enumerate(rows, 1):
                seq = _next_seq(conn, chat_id, row.created_at, prompt_tokens=row.prompt_tokens,
                                completion_tokens=row.completion_tokens,
                                release=lease_owner if index == len(rows) else None)
                stored.append(with_seq(row, seq))
                conn.execute(stmt.INSERT_MESSAGE, message_row(stored[-1]))
            if usage.any_counted(stored):
                conn.execute(usage.recount(dialect, sa.and_(
                    messages.c.chat_id == chat_id,
                    messages.c.seq.in_([m.seq for m in stored]))))
            if lease_owner is not None and not rows:
                _release(conn, chat_id, lease_owner)
            return stored

        return await self.db.write(run)

    async def delete_message(self, chat_id: str, seq: int) -> bool:
        dialect = self.dialect

        def run(conn: Connection) -> bool:
            conn.execute(usage.recount(dialect, sa.and_(messages.c.chat_id == chat_id,
                                                        messages.c.seq == seq), -1))
            result = conn.execute(
                messages.delete().where(messages.c.chat_id == chat_id, messages.c.seq == seq))
            if result.rowcount:
                conn.execute(chats.update().where(chats.c.id == chat_id).values(
                    updated_at=utcnow(), history_version=chats.c.history_version + 1))
            return bool(result.rowcount)

        return await self.db.write(run)

    async def replace_answer(
        self, old: Message, answer: Message, *, lease_owner: str | None = None
    ) -> Message:
        dialect = self.dialect

        def run(conn: Connection) -> Message:
            marked = conn.execute(stmt.MARK_REPLACED, {"p_chat": old.chat_id, "p_seq": old.seq})
            if marked.rowcount != 1:  # our lease lapsed and someone else changed the chat
                raise ChatMoved(old.chat_id)
            stored = _append_answer(conn, answer, lease_owner)
            conn.execute(usage.recount(dialect, sa.and_(messages.c.chat_id == stored.chat_id,
                                                        messages.c.seq == stored.seq)))
            return stored

        return await self.db.write_now(run)

    async def fork_chat(self, chat: Chat, up_to_seq: int) -> Chat:
        kept = sa.and_(messages.c.chat_id == chat.parent_id, messages.c.seq <= up_to_seq,
                       messages.c.status == TurnStatus.OK.value)
        columns = ["chat_id", "seq", "role", "content", "status", "error", "model",
                   "prompt_tokens", "completion_tokens", "latency_ms", "created_at",
                   "context_messages", "context_tokens", "covers_seq", "replaces_seq",
                   "tool_calls", "tool_call_id", "parts"]
        copied = sa.select(sa.literal(chat.id, sa.String), *(messages.c[c] for c in columns[1:]))

        def run(conn: Connection) -> Chat:
            prompt, completion = conn.execute(sa.select(
                sa.func.coalesce(sa.func.sum(messages.c.prompt_tokens), 0),
                sa.func.coalesce(sa.func.sum(messages.c.completion_tokens), 0),
            ).where(kept)).one()
            forked = replace(chat, forked_at_seq=up_to_seq, message_count=up_to_seq,
                             prompt_tokens=int(prompt), completion_tokens=int(completion))
            conn.execute(chats.insert(), chat_row(forked))
            conn.execute(messages.insert().from_select(columns, copied.where(kept)))
            return forked

        return await self.db.write(run)

    # usage, search, retention -----------------------------------------------------------

    async def usage(
        self, tenant_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[ModelUsage]:
        return await self.db.read(lambda conn: usage.report(conn, tenant_id, start, end))

    async def search(self, tenant_id: str, query: str, limit: int = 20) -> list[SearchHit]:
        dialect = self.dialect
        if dialect == "sqlite" and await self.db.read(fulltext.behind):
            await self.db.write(fulltext.catch_up)  # see every message, up to the last
        return await self.db.read(
            lambda conn: fulltext.search(conn, dialect, tenant_id, query, limit))

    async def delete_expired(self, now: datetime) -> list[str]:
        expired = (
            sa.select(chats.c.id)
            .where(chats.c.expires_at <= now,
                   sa.or_(chats.c.lease_owner.is_(None), chats.c.lease_expires_at < now))
            .limit(1000)
        )
        dialect = self.dialect

        def run(conn: Connection) -> list[str]:
            ids = [row[0] for row in conn.execute(expired)]
            if ids:
                conn.execute(usage.recount(dialect, messages.c.chat_id.in_(ids), -1))
                conn.execute(messages.delete().where(messages.c.chat_id.in_(ids)))
                conn.execute(chats.delete().where(chats.c.id.in_(ids)))
            return ids

        return await self.db.write(run)

    # titles, import -----------------------------------------------------------------------

    async def set_title_if_unset(self, chat_id: str, tenant_id: str, title: str) -> bool:
        query = (chats.update()
                 .where(chats.c.id == chat_id, chats.c.tenant_id == tenant_id,
                        chats.c.title.is_(None))
                 .values(title=title, updated_at=utcnow()))
        return await self.db.write_now(lambda conn: bool(conn.execute(query).rowcount))

    async def import_chat(self, chat: Chat, rows: list[Message]) -> Chat:
        dialect = self.dialect

        def run(conn: Connection) -> Chat:
            conn.execute(chats.insert(), chat_row(chat))
            if rows:
                conn.execute(messages.insert(),
                             [message_row(replace(m, chat_id=chat.id)) for m in rows])
                if usage.any_counted(rows):
                    conn.execute(usage.recount(dialect, messages.c.chat_id == chat.id))
            return chat

        try:
            return await self.db.write(run)
        except sa.exc.IntegrityError:
            if await self._chat_exists(chat.id):
                raise ChatExists(chat.id) from None
            raise


def _append_answer(conn: Connection, answer: Message, lease_owner: str | None) -> Message:
    """Append a turn's answer: its seq, the chat's token counters and the release of the
    turn lease in one statement, then the row."""
    stored = with_seq(answer, _next_seq(
        conn, answer.chat_id, answer.created_at, prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens, release=lease_owner,
    ))
    conn.execute(stmt.INSERT_MESSAGE, message_row(stored))
    return stored


def _as_seen(seen: Chat, owner: str, until: datetime, now: datetime) -> dict[str, Any]:
    """The binds of a turn's or round's first write: the chat as ``seen`` (the write's
    condition) and the lease it takes."""
    return {"p_chat": seen.id, "p_tenant": seen.tenant_id, "p_count": seen.message_count,
            "p_seen": seen.updated_at, "p_version": seen.history_version, "p_now": now,
            "p_owner": owner, "p_until": until}


def _unsynced(conn: Connection) -> None:
    """Commit a turn's first write without waiting for PostgreSQL's WAL flush (1-2 ms).

    Safe because nothing is acknowledged on it: the client hears of a turn only once its
    answer or failure is committed, synchronously, which flushes the log up to and
    including this write. A database crash in between loses a message whose turn never
    finished, as if it had not arrived. (SQLite's WAL mode never syncs on commit.)
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


def _release(conn: Connection, chat_id: str, owner: str) -> None:
    conn.execute(stmt.RELEASE_LEASE, {"p_chat": chat_id, "p_owner": owner})


def _next_seq(
    conn: Connection, chat_id: str, now: datetime, *,
    prompt_tokens: int = 0, completion_tokens: int = 0, release: str | None = None,
) -> int:
    """Allocate the chat's next seq in the same statement that bumps its counters (and, at
    the end of a turn, releases the turn lease)."""
    params = {"p_chat": chat_id, "p_now": now, "p_prompt": prompt_tokens,
              "p_completion": completion_tokens, "p_owner": release}
    seq = conn.execute(stmt.BUMP if release is None else stmt.BUMP_AND_RELEASE,
                       params).scalar_one_or_none()
    if seq is None:
        raise ChatNotFound(chat_id)
    return int(seq)
