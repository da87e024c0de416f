"""How SQL reaches the database: each store call is one function run in one transaction.

PostgreSQL runs it on SQLAlchemy's async engine (asyncpg) through ``run_sync``. SQLite runs
it on a thread of its own with the plain sqlite3 driver: one thread hop per store call
instead of one per statement, fetch and commit (aiosqlite's way, several times slower).
SQLite writes go through one writer thread with ``BEGIN IMMEDIATE`` (the lock is taken up
front, so two writers never deadlock on an upgrade); reads use their own threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

T = TypeVar("T")

_MIGRATION_LOCK_ID = 0x63686174  # "chat": serializes schema upgrades across replicas


class Database(Protocol):
    dialect: str

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a write transaction; commit if it returns."""

    async def read(self, fn: Callable[[Connection], T]) -> T: ...

    async def dispose(self) -> None: ...


def database_url(url: str) -> sa.URL:
    """Accept the plain schemes users write and pick the driver for them."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite+aiosqlite://", "sqlite://"),
    ):
        if url.startswith(plain):
            url = driver + url[len(plain):]
    return make_url(url)


def connect(url: str, *, synchronous: str = "NORMAL", pool_size: int = 20) -> Database:
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        return ThreadedSQLite(parsed, synchronous)
    return AsyncDatabase(create_async_engine(
        parsed, pool_size=pool_size, max_overflow=pool_size * 4, pool_recycle=300))


class AsyncDatabase:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    async def write(self, fn: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn)

    async def dispose(self) -> None:
        await self.engine.dispose()


class ThreadedSQLite:
    dialect = "sqlite"

    def __init__(self, url: sa.URL, synchronous: str) -> None:
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.writer = _sqlite_engine(url, synchronous, immediate=True, pool_size=1)
        self.reader = _sqlite_engine(url, synchronous, immediate=False, pool_size=2)
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="chatsessions-write")
        self._read_threads = ThreadPoolExecutor(2, thread_name_prefix="chatsessions-read")

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._write_thread, _in_transaction, self.writer, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._read_threads, _in_transaction, self.reader, fn)

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        for pool in (self._write_thread, self._read_threads):
            await loop.run_in_executor(None, pool.shutdown)
        self.writer.dispose()
        self.reader.dispose()


def _in_transaction(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return fn(conn)


def _sqlite_engine(url: sa.URL, synchronous: str, *, immediate: bool, pool_size: int) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                              pool_size=pool_size, max_overflow=0)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we say when transactions begin
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


async def migrate(db: Database) -> None:
    """Bring the schema to the newest Alembic revision, one process at a time."""

    def upgrade(conn: Connection) -> None:
        if db.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

    for attempt in range(5):
        try:
            await db.write(upgrade)
            return
        except sa.exc.OperationalError:
            # Another process on the same SQLite file was migrating at the same moment.
            if attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
