"""How SQL reaches the database: each store call is one function run in one transaction.

PostgreSQL runs it on SQLAlchemy's async engine (asyncpg) through ``run_sync``. SQLite runs
it on a thread of its own with the plain sqlite3 driver: one thread hop per store call
instead of one per statement, fetch and commit (aiosqlite's way, several times slower).
SQLite writes go through one writer thread with ``BEGIN IMMEDIATE`` (the lock is taken up
front, so two writers never deadlock on an upgrade); reads use their own threads.

The short writes of a turn (``write_now``) run on the event loop itself when the
database's write lock is free at that instant: in WAL mode a commit only appends to the
log, so such a transaction takes a few hundred microseconds of CPU and no disk wait, and
the two thread hops around it cost about as much again. If another connection holds the
lock, the write queues on the writer thread, which waits for it. That connection never
checkpoints on its own (a checkpoint syncs the database file); the writer thread does it
every ``CHECKPOINT_EVERY`` inline commits, while further writes queue behind it. A
lookup by key (``read_now``: a chat's row) likewise runs on the loop, on a reading
connection of its own.

Every call's failure passes through its database's ``Outage`` (``faults``): a server that
cannot be reached or a connection that died becomes ``DatabaseUnavailable``, logged once
per outage, and connections older than the last such failure are replaced before use.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from chatsessions.store.faults import Outage, unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

_MIGRATION_LOCK_ID = 0x63686174  # "chat": serializes schema upgrades across replicas
_SWEEP_LOCK_ID = 0x73776570  # "swep": held by the one process that runs periodic sweeps
#: inline commits between two WAL checkpoints (a turn's commit adds about 6 pages)
CHECKPOINT_EVERY = 100
#: seconds before a pooled PostgreSQL connection is replaced (SQLAlchemy's pool_recycle)
IDLE_RECYCLE_S = 300


class Database(Protocol):
    dialect: str
    #: failures that mean the database is unreachable become ``DatabaseUnavailable`` here
    outage: Outage

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a write transaction; commit if it returns."""

    async def write_now(self, fn: Callable[[Connection], T]) -> T:
        """``write`` for a transaction of a few statements, which may run at once."""

    async def read(self, fn: Callable[[Connection], T]) -> T: ...

    async def read_now(self, fn: Callable[[Connection], T]) -> T:
        """``read`` for a lookup of a row by key, which may run at once."""

    async def lead_sweeps(self) -> bool:
        """Hold (or take, if free) the lock that makes this process the one of all sharing
        the database to run periodic sweeps; whether it holds it. Held until the process
        exits or loses its connection, so another takes over only then."""

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


def connect(url: str, *, synchronous: str = "NORMAL", pool_size: int = 20,
            housekeeping: Callable[[Connection], None] | None = None) -> Database:
    """``housekeeping``: deferred work of the store's, written to SQLite with each WAL
    checkpoint (PostgreSQL needs none)."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        return ThreadedSQLite(parsed, synchronous, housekeeping)
    return AsyncDatabase(create_async_engine(
        parsed, pool_size=pool_size, max_overflow=pool_size * 4, pool_recycle=IDLE_RECYCLE_S),
        idle_limit=pool_size)


class AsyncDatabase:
    def __init__(self, engine: AsyncEngine, idle_limit: int) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.outage = Outage()
        #: driver connections kept checked out for ``driver``: (pool connection, asyncpg
        #: connection, when it was put aside)
        self._idle: list[tuple[AsyncConnection, Any, float]] = []
        self._idle_limit = idle_limit
        #: the connection holding the sweep lock (a session advisory lock), if we hold it
        self._sweeper: tuple[AsyncConnection, Any] | None = None
        event.listen(engine.sync_engine, "checkout", self._check_out)

    def _check_out(self, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        """Replace a pooled connection the server has closed, or one older than the last
        failure (a restart killed it, whether or not we have heard yet), before it is
        used: the first request after an outage then gets a fresh one. No round trip,
        unlike SQLAlchemy's ``pool_pre_ping``."""
        if (record.starttime < self.outage.last_failure
                or dbapi_conn.driver_connection.is_closed()):
            raise sa.exc.DisconnectionError("connection older than the last failure")

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self.outage.guarded(self._write(fn))

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    write_now = write

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self.outage.guarded(self._read(fn))

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn)

    async def read_now(self, fn: Callable[[Connection], T]) -> T:
        return await self.read(fn)

    async def driver(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn`` on a bare asyncpg connection, outside any transaction block (so each
        statement commits on its own). Such connections are kept aside between calls: a
        pool checkout and its reset cost as much as a one-row statement's round trip."""
        outage = self.outage
        epoch = outage.epoch
        try:
            pooled, raw = await self._take()
        except Exception as exc:
            outage.check(exc)
            raise
        try:
            result = await fn(raw)
        except BaseException as exc:
            lost = isinstance(exc, Exception) and unavailable(exc) is not None
            if isinstance(exc, asyncpg.PostgresError) and not lost and not raw.is_closed():
                await self._keep(pooled, raw)  # the server refused a statement: still usable
            else:  # cancelled or broken mid-statement: never reuse it
                await _discard(pooled)
                if not isinstance(exc, asyncio.CancelledError):
                    # the connection failed: the server may have restarted, and then every
                    # kept connection is dead too (as SQLAlchemy's pool assumes)
                    idle, self._idle = self._idle, []
                    for other, _raw, _since in idle:
                        await _discard(other)
            if lost:
                outage.check(exc)
            raise
        await self._keep(pooled, raw)
        if outage.since is not None:
            outage.succeeded(epoch)
        return result

    async def lead_sweeps(self) -> bool:
        """PostgreSQL's session advisory lock, on a connection kept for it: across workers
        and replicas, and released by the server when the holder dies."""
        if self._sweeper is not None:
            if not self._sweeper[1].is_closed():
                return True
            await _discard(self._sweeper[0])
            self._sweeper = None
        try:
            pooled = await self.engine.connect()
        except Exception as exc:
            self.outage.check(exc)
            raise
        try:
            raw: Any = (await pooled.get_raw_connection()).driver_connection
            held = bool(await raw.fetchval("SELECT pg_try_advisory_lock($1)", _SWEEP_LOCK_ID))
        except Exception as exc:
            await _discard(pooled)
            self.outage.check(exc)
            raise
        if held:
            self._sweeper = (pooled, raw)
        else:
            await pooled.close()
        return held

    async def _take(self) -> tuple[AsyncConnection, Any]:
        """The connection put aside last, unless it idled longer than the pool would keep
        a connection (``IDLE_RECYCLE_S``: servers and proxies drop idle sessions), the
        server closed it, or it was put aside before the last failure (a restart killed
        it); else a fresh checkout."""
        while self._idle:
            pooled, raw, since = self._idle.pop()
            if (time.monotonic() - since < IDLE_RECYCLE_S and not raw.is_closed()
                    and since > self.outage.last_failure_mono):
                return pooled, raw
            await _discard(pooled)  # closed for real, not handed back to the pool
        pooled = await self.engine.connect()
        return pooled, (await pooled.get_raw_connection()).driver_connection

    async def _keep(self, pooled: AsyncConnection, raw: Any) -> None:
        if len(self._idle) < self._idle_limit:
            self._idle.append((pooled, raw, time.monotonic()))
        else:
            await pooled.close()

    async def dispose(self) -> None:
        if self._sweeper is not None:  # closed for real: the lock goes with the session
            await _discard(self._sweeper[0])
            self._sweeper = None
        idle, self._idle = self._idle, []
        for pooled, _raw, _since in idle:
            await pooled.close()
        await self.engine.dispose()


async def _discard(pooled: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await pooled.invalidate()
        await pooled.close()


class ThreadedSQLite:
    dialect = "sqlite"

    def __init__(self, url: sa.URL, synchronous: str,
                 housekeeping: Callable[[Connection], None] | None = None) -> None:
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.writer = _sqlite_engine(url, synchronous, immediate=True, pool_size=1)
        self.reader = _sqlite_engine(url, synchronous, immediate=False, pool_size=2)
        self.inline = _sqlite_engine(url, synchronous, immediate=True, pool_size=1,
                                     busy_timeout_ms=0)
        self.inline_reader = _sqlite_engine(url, synchronous, immediate=False, pool_size=1,
                                            busy_timeout_ms=0)
        #: a lock file beside the database, held by the process that runs periodic sweeps
        self._sweep_lock_path = (None if not url.database or url.database == ":memory:"
                                 else Path(f"{Path(url.database).expanduser()}.sweeps.lock"))
        self._sweep_lock: int | None = None
        self._writer = _OneConnection(self.writer, housekeeping)  # on the writer thread only
        self._inline = _OneConnection(self.inline)  # used on the event loop only
        self._inline_read = _OneConnection(self.inline_reader)  # likewise
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="chatsessions-write")
        self._read_threads = ThreadPoolExecutor(2, thread_name_prefix="chatsessions-read")
        self.outage = Outage()
        self._inline_commits = 0
        #: jobs (writes, checkpoints) on the writer thread; inline writes wait for none
        self._on_thread = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._checkpoint: asyncio.Future[None] | None = None

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self.outage.guarded(self._on_writer_thread(self._writer.run, fn))

    async def _on_writer_thread(self, call: Callable[..., T], *args: Any) -> T:
        self._on_thread += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._write_thread, call, *args)
        finally:
            self._on_thread -= 1
            if not self._on_thread:
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def write_now(self, fn: Callable[[Connection], T]) -> T:
        return await self._now(self._inline.run, self._writer.run, fn)

    async def driver_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``write_now`` for ``fn`` written against the bare sqlite3 connection."""
        return await self._now(self._inline.run_driver, self._writer.run_driver, fn)

    async def _now(self, inline: Callable[[Callable[[Any], T]], T],
                   on_thread: Callable[[Callable[[Any], T]], T], fn: Callable[[Any], T]) -> T:
        return await self.outage.guarded(self._now_unchecked(inline, on_thread, fn))

    async def _now_unchecked(
        self, inline: Callable[[Callable[[Any], T]], T],
        on_thread: Callable[[Callable[[Any], T]], T], fn: Callable[[Any], T],
    ) -> T:
        # While the writer thread works (a long write, a checkpoint, a write waiting for
        # another process's lock), wait for it rather than queue behind it: the queue
        # drains, a checkpoint sees no new frames and completes (so the next write can
        # start the log over), and inline writes do not fail on the thread's lock.
        while self._on_thread:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter
        try:
            result = inline(fn)
        except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
            if not _is_busy(exc):
                raise
            # another process has the lock: wait for it off the loop
            return await self._on_writer_thread(on_thread, fn)
        self._inline_commits += 1
        if self._inline_commits >= CHECKPOINT_EVERY:
            self._inline_commits = 0
            self._checkpoint = asyncio.ensure_future(
                self._on_writer_thread(self._writer.checkpoint))
        return result

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self.outage.guarded(asyncio.get_running_loop().run_in_executor(
            self._read_threads, _in_transaction, self.reader, fn))

    async def read_now(self, fn: Callable[[Connection], T]) -> T:
        """``read`` on the event loop itself: in WAL mode a reader waits for no writer,
        and a lookup by key costs less CPU than the two thread hops around it (and on a
        busy machine, far less time). Should the database be busy all the same (a
        checkpoint restarting the log), the read goes to the read threads."""
        outage = self.outage
        epoch = outage.epoch
        try:
            result = self._inline_read.run(fn)
        except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
            if not _is_busy(exc):
                outage.check(exc)
                raise
            return await self.read(fn)
        except Exception as exc:
            outage.check(exc)
            raise
        if outage.since is not None:
            outage.succeeded(epoch)
        return result

    async def lead_sweeps(self) -> bool:
        """An exclusive ``flock`` on a file beside the database: every process using the
        file is on this host, and the lock goes with the process."""
        if self._sweep_lock is not None or self._sweep_lock_path is None:
            return True
        try:
            fd = os.open(self._sweep_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self.outage.check(exc)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._sweep_lock = fd
        return True

    async def dispose(self) -> None:
        if self._sweep_lock is not None:
            os.close(self._sweep_lock)  # releases the lock
            self._sweep_lock = None
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        loop = asyncio.get_running_loop()
        for pool in (self._write_thread, self._read_threads):
            await loop.run_in_executor(None, pool.shutdown)
        self._inline.close()
        self._inline_read.close()
        self._writer.close()
        self.inline.dispose()
        self.inline_reader.dispose()
        self.writer.dispose()
        self.reader.dispose()


def _in_transaction(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return fn(conn)


def _is_busy(exc: sa.exc.OperationalError | sqlite3.OperationalError) -> bool:
    text = str(exc.orig if isinstance(exc, sa.exc.OperationalError) else exc)
    return "locked" in text or "busy" in text


class _OneConnection:
    """One connection kept open for one thread's transactions: checking a connection out
    of the pool, resetting it on return and its begin event cost more than the few
    statements of a turn's write."""

    def __init__(self, engine: Engine,
                 housekeeping: Callable[[Connection], None] | None = None) -> None:
        self.engine = engine
        self.housekeeping = housekeeping
        self.conn: Connection | None = None

    def _open(self) -> Connection:
        if self.conn is None or self.conn.closed or self.conn.invalidated:
            self.conn = self.engine.connect()
        return self.conn

    def run(self, fn: Callable[[Connection], T]) -> T:
        conn = self._open()
        with conn.begin():
            return fn(conn)

    def run_driver(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``run`` on the bare sqlite3 connection: the transaction is ours to open and end
        (the connection is in autocommit mode; SQLAlchemy's side of it stays idle)."""
        driver: sqlite3.Connection = self._open().connection.driver_connection  # type: ignore[assignment]
        driver.execute("BEGIN IMMEDIATE")
        try:
            result = fn(driver)
            driver.execute("COMMIT")
        except BaseException:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            raise
        return result

    def checkpoint(self) -> None:
        """Copy the log into the database file as far as readers allow (never blocks
        them); outside any transaction, as a checkpoint must be. The housekeeping write
        goes first, so the checkpoint takes its pages along."""
        if self.housekeeping is not None:
            try:
                self.run(self.housekeeping)
            except Exception:
                log.exception("deferred store work failed; the next checkpoint retries it")
        try:
            self._open().connection.driver_connection.execute(  # type: ignore[union-attr]
                "PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.exception("WAL checkpoint failed; the next one will catch up")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _sqlite_engine(url: sa.URL, synchronous: str, *, immediate: bool, pool_size: int,
                   busy_timeout_ms: int = 30_000) -> Engine:
    engine = sa.create_engine(
        url, connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
        pool_size=pool_size, max_overflow=0)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we say when transactions begin
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        if busy_timeout_ms == 0:  # the inline connection: checkpoints happen elsewhere
            cursor.execute("PRAGMA wal_autocheckpoint=0")
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
