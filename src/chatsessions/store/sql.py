"""SQL store on SQLAlchemy Core (async): SQLite through aiosqlite, PostgreSQL through asyncpg."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from chatsessions.errors import ChatNotFound, TurnInterrupted
from chatsessions.store.schema import api_keys, chats, messages
from chatsessions.types import ApiKey, Chat, Message, Role, TurnStatus, utcnow

INTERRUPTED = "interrupted: the service stopped during this turn"
_MIGRATION_LOCK_ID = 0x63686174  # "chat": serializes schema upgrades across replicas


def async_url(url: str) -> str:
    """Accept the plain schemes users write and pick the async driver for them."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


class SQLStore:
    def __init__(
        self,
        url: str,
        *,
        synchronous: str = "NORMAL",
        pool_size: int = 20,
        echo: bool = False,
    ) -> None:
        self.url = async_url(url)
        self._synchronous = synchronous
        self._pool_size = pool_size
        self._echo = echo
        self._engine: AsyncEngine | None = None

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("store is not open")
        return self._engine

    async def open(self) -> None:
        if self._engine is not None:
            return
        if self.dialect == "sqlite":
            self._engine = self._sqlite_engine()
        else:
            self._engine = create_async_engine(
                self.url, pool_size=self._pool_size, max_overflow=self._pool_size * 4,
                pool_pre_ping=True, echo=self._echo,
            )
        await self._migrate()

    def _sqlite_engine(self) -> AsyncEngine:
        database = make_url(self.url).database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            self.url, connect_args={"timeout": 30}, echo=self._echo,
            pool_size=self._pool_size, max_overflow=self._pool_size,
        )
        synchronous = self._synchronous

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine

    async def _migrate(self) -> None:
        for attempt in range(5):
            try:
                async with self.engine.begin() as conn:
                    if self.dialect == "postgresql":
                        await conn.execute(
                            sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID}
                        )
                    await conn.run_sync(_upgrade)
                return
            except sa.exc.OperationalError:
                # Another process on the same SQLite file was migrating at the same moment.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # chats ---------------------------------------------------------------------------

    async def create_chat(
        self, chat: Chat, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> Chat | None:
        """Insert ``chat``; None if the tenant already used ``idempotency_key``."""
        values = {**_chat_row(chat), "idempotency_key": idempotency_key,
                  "request_hash": request_hash}
        try:
            async with self.engine.begin() as conn:
                await conn.execute(chats.insert().values(**values))
        except sa.exc.IntegrityError:
            if idempotency_key is None:
                raise
            return None
        return chat

    async def chat_by_idempotency_key(
        self, tenant_id: str, idempotency_key: str
    ) -> tuple[Chat, str | None] | None:
        query = chats.select().where(chats.c.tenant_id == tenant_id,
                                     chats.c.idempotency_key == idempotency_key)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return (_chat(row), row["request_hash"]) if row else None

    async def get_chat(self, chat_id: str, tenant_id: str) -> Chat | None:
        if not _storable(chat_id):
            return None
        query = chats.select().where(chats.c.id == chat_id, chats.c.tenant_id == tenant_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _chat(row) if row else None

    async def list_chats(
        self,
        tenant_id: str,
        *,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
        title_contains: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[Chat]:
        query = chats.select().where(chats.c.tenant_id == tenant_id)
        if before is not None:
            created, chat_id = before
            query = query.where(
                sa.or_(
                    chats.c.created_at < created,
                    sa.and_(chats.c.created_at == created, chats.c.id < chat_id),
                )
            )
        if title_contains:
            query = query.where(chats.c.title.ilike(f"%{_escape_like(title_contains)}%",
                                                   escape="\\"))
        query = query.order_by(chats.c.created_at.desc(), chats.c.id.desc())
        async with self.engine.connect() as conn:
            if not metadata:
                rows = (await conn.execute(query.limit(limit))).mappings().all()
                return [_chat(r) for r in rows]
            # Metadata filters are evaluated here so they mean the same on both engines.
            found: list[Chat] = []
            result = await conn.stream(query)
            async for row in result.mappings():
                chat = _chat(row)
                if all(chat.metadata.get(k) == v for k, v in metadata.items()):
                    found.append(chat)
                    if len(found) >= limit:
                        break
            await result.close()
            return found

    async def update_chat(
        self, chat_id: str, tenant_id: str, changes: dict[str, Any]
    ) -> Chat | None:
        if not _storable(chat_id):
            return None
        values = {**changes, "updated_at": utcnow()}
        query = (
            chats.update()
            .where(chats.c.id == chat_id, chats.c.tenant_id == tenant_id)
            .values(**values)
            .returning(*chats.c)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _chat(row) if row else None

    async def delete_chat(self, chat_id: str, tenant_id: str) -> bool:
        if not _storable(chat_id):
            return False
        async with self.engine.begin() as conn:
            owned = await conn.execute(
                sa.select(chats.c.id).where(chats.c.id == chat_id, chats.c.tenant_id == tenant_id)
            )
            if owned.first() is None:
                return False
            await conn.execute(messages.delete().where(messages.c.chat_id == chat_id))
            await conn.execute(chats.delete().where(chats.c.id == chat_id))
        return True

    # turns ---------------------------------------------------------------------------

    async def add_user_message(
        self, chat_id: str, content: str, *, idempotency_key: str | None = None
    ) -> Message:
        now = utcnow()
        async with self.engine.begin() as conn:
            seq = await _next_seq(conn, chat_id, now)
            message = Message(
                chat_id=chat_id, seq=seq, role=Role.USER, content=content,
                status=TurnStatus.PENDING, created_at=now, idempotency_key=idempotency_key,
            )
            await conn.execute(messages.insert().values(**_message_row(message)))
        return message

    async def complete_turn(
        self, user: Message, answer: Message, *, lease_owner: str | None = None
    ) -> Message:
        async with self.engine.begin() as conn:
            marked = await conn.execute(
                messages.update()
                .where(messages.c.chat_id == user.chat_id, messages.c.seq == user.seq,
                       messages.c.status == TurnStatus.PENDING.value)
                .values(status=TurnStatus.OK.value, prompt_tokens=user.prompt_tokens)
            )
            if marked.rowcount != 1:  # another replica declared this turn dead meanwhile
                raise TurnInterrupted(
                    "this turn took longer than its lease and was failed by another replica")
            seq = await _next_seq(
                conn, user.chat_id, answer.created_at,
                prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                release=lease_owner,
            )
            stored = _replace_seq(answer, seq)
            await conn.execute(messages.insert().values(**_message_row(stored)))
        return stored

    async def fail_turn(
        self, user: Message, error: str, partial: Message | None = None, *,
        lease_owner: str | None = None,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                messages.update()
                .where(messages.c.chat_id == user.chat_id, messages.c.seq == user.seq)
                .values(status=TurnStatus.FAILED.value, error=error)
            )
            if partial is not None:
                seq = await _next_seq(conn, user.chat_id, partial.created_at,
                                      release=lease_owner)
                await conn.execute(messages.insert().values(**_message_row(
                    _replace_seq(partial, seq))))
            elif lease_owner is not None:
                await conn.execute(_release(user.chat_id, lease_owner))

    async def messages(
        self, chat_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Message]:
        query = (
            messages.select()
            .where(messages.c.chat_id == chat_id, messages.c.seq > after_seq)
            .order_by(messages.c.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_message(r) for r in rows]

    async def recover_pending(self, owners: Sequence[str] = ()) -> int:
        """Fail pending turns nobody can still finish: in chats whose lease is free, expired,
        or held by one of ``owners`` (processes known to be dead), and release those leases.
        """
        now = utcnow()
        free = [chats.c.lease_owner.is_(None), chats.c.lease_expires_at < now]
        if owners:
            free.append(chats.c.lease_owner.in_(list(owners)))
        orphaned = sa.select(chats.c.id).where(sa.or_(*free))
        async with self.engine.begin() as conn:
            result = await conn.execute(
                messages.update()
                .where(messages.c.status == TurnStatus.PENDING.value,
                       messages.c.chat_id.in_(orphaned))
                .values(status=TurnStatus.FAILED.value, error=INTERRUPTED)
            )
            if owners:
                await conn.execute(
                    chats.update().where(chats.c.lease_owner.in_(list(owners)))
                    .values(lease_owner=None, lease_expires_at=None)
                )
        return int(result.rowcount or 0)

    async def lease_owners(self, prefix: str) -> list[str]:
        query = (sa.select(chats.c.lease_owner).distinct()
                 .where(chats.c.lease_owner.startswith(prefix, autoescape=True)))
        async with self.engine.connect() as conn:
            return [row[0] for row in (await conn.execute(query)).all()]

    async def mark_interrupted(self, chat_id: str, seqs: list[int]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                messages.update()
                .where(messages.c.chat_id == chat_id, messages.c.seq.in_(seqs),
                       messages.c.status == TurnStatus.PENDING.value)
                .values(status=TurnStatus.FAILED.value, error=INTERRUPTED)
            )

    # leases: one turn at a time per chat, across processes ------------------------------

    async def try_lease(
        self, chat_id: str, tenant_id: str, owner: str, until: datetime
    ) -> tuple[Chat | None, bool]:
        """Take the chat's turn lease if free or expired: (chat, True); held by someone
        else: (chat, False); no such chat for this tenant: (None, False)."""
        if not _storable(chat_id):
            return None, False
        now = utcnow()
        query = (
            chats.update()
            .where(chats.c.id == chat_id, chats.c.tenant_id == tenant_id,
                   sa.or_(chats.c.lease_owner.is_(None), chats.c.lease_expires_at < now))
            .values(lease_owner=owner, lease_expires_at=until)
            .returning(*chats.c)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is not None:
            return _chat(row), True
        return await self.get_chat(chat_id, tenant_id), False

    async def renew_lease(self, chat_id: str, owner: str, until: datetime) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                chats.update().where(chats.c.id == chat_id, chats.c.lease_owner == owner)
                .values(lease_expires_at=until)
            )
        return bool(result.rowcount)

    async def release_lease(self, chat_id: str, owner: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_release(chat_id, owner))

    # idempotency -------------------------------------------------------------------------

    async def message_by_idempotency_key(self, chat_id: str, key: str) -> Message | None:
        query = messages.select().where(messages.c.chat_id == chat_id,
                                        messages.c.idempotency_key == key)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _message(row) if row else None

    async def expire_idempotency_keys(self, before: datetime) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                messages.update()
                .where(messages.c.idempotency_key.is_not(None), messages.c.created_at < before)
                .values(idempotency_key=None)
            )
            await conn.execute(
                chats.update()
                .where(chats.c.idempotency_key.is_not(None), chats.c.created_at < before)
                .values(idempotency_key=None, request_hash=None)
            )
        return int(result.rowcount or 0)

    # api keys ------------------------------------------------------------------------

    async def add_api_key(self, key: ApiKey) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(api_keys.insert().values(
                id=key.id, tenant_id=key.tenant_id, name=key.name, key_hash=key.key_hash,
                created_at=key.created_at, revoked_at=key.revoked_at,
            ))

    async def list_api_keys(self) -> list[ApiKey]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                api_keys.select().order_by(api_keys.c.created_at))).mappings().all()
        return [_api_key(r) for r in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        query = api_keys.select().where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _api_key(row) if row else None

    async def has_api_keys(self) -> bool:
        query = sa.select(api_keys.c.id).where(api_keys.c.revoked_at.is_(None)).limit(1)
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    # history edits outside turns (conversation items, branches) -----------------------

    async def append_messages(self, chat_id: str, rows: list[Message]) -> list[Message]:
        stored = []
        async with self.engine.begin() as conn:
            for row in rows:
                seq = await _next_seq(conn, chat_id, row.created_at,
                                      prompt_tokens=row.prompt_tokens,
                                      completion_tokens=row.completion_tokens)
                stored.append(_replace_seq(row, seq))
                await conn.execute(messages.insert().values(**_message_row(stored[-1])))
        return stored

    async def delete_message(self, chat_id: str, seq: int) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                messages.delete().where(messages.c.chat_id == chat_id, messages.c.seq == seq))
            if result.rowcount:
                await conn.execute(chats.update().where(chats.c.id == chat_id)
                                   .values(updated_at=utcnow()))
        return bool(result.rowcount)

    async def fork_chat(self, chat: Chat, up_to_seq: int) -> Chat:
        from dataclasses import replace

        kept = sa.and_(messages.c.chat_id == chat.parent_id, messages.c.seq <= up_to_seq,
                       messages.c.status == TurnStatus.OK.value)
        columns = ["chat_id", "seq", "role", "content", "status", "error", "model",
                   "prompt_tokens", "completion_tokens", "latency_ms", "created_at"]
        copied = sa.select(sa.literal(chat.id, sa.String), *(messages.c[c] for c in columns[1:]))
        async with self.engine.begin() as conn:
            prompt, completion = (await conn.execute(sa.select(
                sa.func.coalesce(sa.func.sum(messages.c.prompt_tokens), 0),
                sa.func.coalesce(sa.func.sum(messages.c.completion_tokens), 0),
            ).where(kept))).one()
            forked = replace(chat, forked_at_seq=up_to_seq, message_count=up_to_seq,
                             prompt_tokens=int(prompt), completion_tokens=int(completion))
            await conn.execute(chats.insert().values(**_chat_row(forked)))
            await conn.execute(messages.insert().from_select(columns, copied.where(kept)))
        return forked


def _release(chat_id: str, owner: str) -> sa.Update:
    return (chats.update().where(chats.c.id == chat_id, chats.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None))


async def _next_seq(
    conn: AsyncConnection, chat_id: str, now: datetime, *,
    prompt_tokens: int = 0, completion_tokens: int = 0, release: str | None = None,
) -> int:
    """Allocate the chat's next seq in the same statement that bumps its counters (and, at
    the end of a turn, releases the turn lease)."""
    values: dict[str, Any] = {
        "message_count": chats.c.message_count + 1,
        "prompt_tokens": chats.c.prompt_tokens + prompt_tokens,
        "completion_tokens": chats.c.completion_tokens + completion_tokens,
        "updated_at": now,
    }
    if release is not None:
        mine = chats.c.lease_owner == release
        values["lease_owner"] = sa.case((mine, None), else_=chats.c.lease_owner)
        values["lease_expires_at"] = sa.case((mine, None), else_=chats.c.lease_expires_at)
    result = await conn.execute(
        chats.update().where(chats.c.id == chat_id).values(**values)
        .returning(chats.c.message_count)
    )
    seq = result.scalar_one_or_none()
    if seq is None:
        raise ChatNotFound(chat_id)
    return int(seq)


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _storable(chat_id: str) -> bool:
    """Ids no chat can have (too long, NUL, lone surrogates) are simply not found, before
    the database driver gets to choke on them."""
    if len(chat_id) > 64 or "\x00" in chat_id:
        return False
    try:
        chat_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return dict(value or {})


def _chat_row(chat: Chat) -> dict[str, Any]:
    return {
        "id": chat.id, "tenant_id": chat.tenant_id, "title": chat.title,
        "system_prompt": chat.system_prompt, "backend": chat.backend, "model": chat.model,
        "params": chat.params, "metadata": chat.metadata, "parent_id": chat.parent_id,
        "forked_at_seq": chat.forked_at_seq, "message_count": chat.message_count,
        "prompt_tokens": chat.prompt_tokens, "completion_tokens": chat.completion_tokens,
        "created_at": chat.created_at, "updated_at": chat.updated_at,
        "archived_at": chat.archived_at, "expires_at": chat.expires_at,
    }


def _chat(row: Mapping[str, Any]) -> Chat:
    return Chat(
        id=row["id"], tenant_id=row["tenant_id"], title=row["title"],
        system_prompt=row["system_prompt"], backend=row["backend"], model=row["model"],
        params=_json(row["params"]), metadata=_json(row["metadata"]),
        parent_id=row["parent_id"], forked_at_seq=row["forked_at_seq"],
        message_count=row["message_count"], prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        created_at=_utc(row["created_at"]) or utcnow(),
        updated_at=_utc(row["updated_at"]) or utcnow(),
        archived_at=_utc(row["archived_at"]), expires_at=_utc(row["expires_at"]),
    )


def _message_row(m: Message) -> dict[str, Any]:
    return {
        "chat_id": m.chat_id, "seq": m.seq, "role": m.role.value, "content": m.content,
        "status": m.status.value, "error": m.error, "model": m.model,
        "prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens,
        "latency_ms": m.latency_ms, "created_at": m.created_at,
        "idempotency_key": m.idempotency_key,
    }


def _message(row: Mapping[str, Any]) -> Message:
    return Message(
        chat_id=row["chat_id"], seq=row["seq"], role=Role(row["role"]),
        content=row["content"], status=TurnStatus(row["status"]), error=row["error"],
        model=row["model"], prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"], latency_ms=row["latency_ms"],
        created_at=_utc(row["created_at"]) or utcnow(),
        idempotency_key=row["idempotency_key"],
    )


def _api_key(row: Mapping[str, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"], tenant_id=row["tenant_id"], key_hash=row["key_hash"], name=row["name"],
        created_at=_utc(row["created_at"]) or utcnow(), revoked_at=_utc(row["revoked_at"]),
    )


def _replace_seq(message: Message, seq: int) -> Message:
    from dataclasses import replace

    return replace(message, seq=seq)
