"""The database going away is an expected fault: which driver errors mean it, and one
warning per outage instead of a traceback per request.

Every call into the database (``engines``) passes its failure through :meth:`Outage.check`:
an error that says the server cannot be reached or the connection died becomes
:class:`DatabaseUnavailable` (HTTP 503 with Retry-After); anything else is left alone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
import sqlalchemy as sa

from chatsessions.errors import ChatSessionsError, DatabaseUnavailable

T = TypeVar("T")

log = logging.getLogger("chatsessions.store")

#: PostgreSQL states that mean the server is going down, starting up or out of sessions
_UNAVAILABLE_STATES = (
    asyncpg.exceptions.PostgresConnectionError,  # class 08: the connection failed
    asyncpg.exceptions.AdminShutdownError,  # 57P01: terminated by a shutdown
    asyncpg.exceptions.CrashShutdownError,  # 57P02: another backend crashed
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.exceptions.TooManyConnectionsError,  # 53300
)
#: SQLite's primary result codes for "cannot open the file" and "the disk failed"
_SQLITE_UNAVAILABLE = {10: "SQLITE_IOERR", 14: "SQLITE_CANTOPEN"}


def unavailable(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s chain (SQLAlchemy's wrapper, the adapter's, the driver's)
    that says the database cannot be reached, or None if it says something else."""
    if isinstance(exc, ChatSessionsError):  # ours, raised on purpose
        return None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _says_unavailable(current):
            return current
        if isinstance(current, sa.exc.DBAPIError):
            if current.connection_invalidated:
                return current
            orig = current.orig
            current = orig if isinstance(orig, BaseException) else current.__cause__
        else:
            current = current.__cause__
    return None


def _says_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OSError):  # refused, reset, unreachable, timed out, name lookup
        return True
    if isinstance(exc, _UNAVAILABLE_STATES):
        return True
    if isinstance(exc, asyncpg.exceptions.InterfaceError):
        return "closed" in str(exc)  # used after the server dropped it
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", 0) & 0xFF in _SQLITE_UNAVAILABLE
    return False


class Outage:
    """Whether the database is unreachable as far as this process can tell, and the one
    warning and one info line each outage is worth.

    A call notes the outage ``epoch`` when it starts; only a success of a call started
    during the outage ends it (a call that was already on its way when the database went
    away proves nothing about now).
    """

    def __init__(self) -> None:
        self.epoch = 0
        #: ``time.monotonic()`` of the outage's first failure, None while reachable
        self.since: float | None = None
        #: ``time.time()`` and ``time.monotonic()`` of the latest failure: connections
        #: older than that are suspect and replaced before use
        self.last_failure = 0.0
        self.last_failure_mono = 0.0
        self.failures = 0
        #: the latest failure, as the driver put it (for the log)
        self.reason = ""

    def check(self, exc: BaseException) -> None:
        """Raise :class:`DatabaseUnavailable` from ``exc`` if it says the database is
        unreachable; return (the caller re-raises ``exc``) otherwise."""
        cause = unavailable(exc)
        if cause is None:
            return
        self.last_failure, self.last_failure_mono = time.time(), time.monotonic()
        self.failures += 1
        self.reason = f"{type(cause).__name__}: {cause}".strip().rstrip(":")
        if self.since is None:
            self.since = self.last_failure_mono
            self.epoch += 1
            self.failures = 1
            log.warning("database unavailable (%s); requests get 503 database_unavailable "
                        "until it is back", self.reason)
        else:
            log.debug("database still unavailable (%s)", self.reason)
        raise DatabaseUnavailable(type(cause).__name__) from exc

    async def guarded(self, call: Awaitable[T]) -> T:
        """Await ``call`` (not started yet) under this bookkeeping: a failure that says
        the database is unreachable becomes :class:`DatabaseUnavailable`, and a success
        ends an outage that began before the call did."""
        epoch = self.epoch
        try:
            result = await call
        except Exception as exc:
            self.check(exc)
            raise
        if self.since is not None:
            self.succeeded(epoch)
        return result

    def succeeded(self, epoch: int) -> None:
        """A call started at ``epoch`` succeeded: the outage it started in is over."""
        if self.since is not None and epoch == self.epoch:
            lasted = time.monotonic() - self.since
            log.info("database reachable again after %.1f s (%d failed calls)",
                     lasted, self.failures)
            self.since = None
