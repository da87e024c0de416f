"""A turn's two writes, and a tool round's, in each database's own terms.

Every turn writes twice: the user message with the turn lease (``begin``), then the
answer with the chat's and the usage counters and the lease's release (``complete``).
A tool round likewise: the lease (``begin_round``), then its outputs with its answer
(``complete_round``). They are the only store calls on every request's path, so they
skip SQLAlchemy's execution layer and run as driver statements (``driver``): on SQLite,
a short transaction on the bare sqlite3 connection; on PostgreSQL, one statement each
(``statements.*_PG``), i.e. one round trip instead of five. Both take the same
parameters: ``p_*`` for the chat, ``m_*`` for the row.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from chatsessions.store import statements as stmt
from chatsessions.store.driver import DriverStatement
from chatsessions.store.engines import AsyncDatabase, Database, ThreadedSQLite


class TurnWrites(Protocol):
    async def begin(self, params: dict[str, Any]) -> int | None:
        """Take the lease if the chat is as seen and insert the user message: its seq, or
        None (nothing written) if the chat moved or another replica holds the lease."""

    async def complete(self, params: dict[str, Any]) -> int | None:
        """Mark the user message answered, bump the chat's counters and the tenant's usage
        counters, release the lease, insert the answer: its seq, or None (nothing written)
        if the user message is no longer pending (another replica declared the turn
        dead)."""

    async def begin_round(self, params: dict[str, Any]) -> bool:
        """Take the lease if the chat is as seen (``begin``'s condition), writing nothing
        else: whether it was taken."""

    async def complete_round(self, params: dict[str, Any],
                             outputs: list[dict[str, Any]]) -> int | None:
        """Bump the chat's counters by the outputs and the answer and release the lease,
        count the answer in the usage counters, insert the outputs (``m_*`` rows, each
        given its seq here) and the answer: the answer's seq, or None (nothing written)
        if ``p_owner`` no longer holds the lease."""


def turn_writes(db: Database) -> TurnWrites:
    if isinstance(db, ThreadedSQLite):
        return SQLiteTurnWrites(db)
    if isinstance(db, AsyncDatabase) and db.dialect == "postgresql":
        return PostgresTurnWrites(db)
    raise ValueError(f"no turn writes for the {db.dialect!r} database")


class SQLiteTurnWrites:
    def __init__(self, db: ThreadedSQLite) -> None:
        self.db = db
        dialect = sqlite.dialect()
        self._begin = DriverStatement.compile(stmt.BEGIN_TURN, dialect)
        self._insert = DriverStatement.compile(stmt.INSERT_MESSAGE_BOUND, dialect)
        self._mark = DriverStatement.compile(stmt.MARK_ANSWERED, dialect)
        self._bump = DriverStatement.compile(stmt.BUMP_AND_RELEASE, dialect)
        self._count = DriverStatement.compile(stmt.COUNT_ANSWER, dialect)
        self._begin_round = DriverStatement.compile(stmt.BEGIN_ROUND, dialect)
        self._bump_round = DriverStatement.compile(stmt.BUMP_ROUND, dialect)

    async def begin(self, params: dict[str, Any]) -> int | None:
        def run(conn: sqlite3.Connection) -> int | None:
            taken = conn.execute(self._begin.sql, self._begin.args(params)).fetchall()
            if not taken:
                return None
            return self._insert_at(conn, taken[0][0], params)

        return await self.db.driver_now(run)

    async def complete(self, params: dict[str, Any]) -> int | None:
        def run(conn: sqlite3.Connection) -> int | None:
            if conn.execute(self._mark.sql, self._mark.args(params)).rowcount != 1:
                return None
            bumped = conn.execute(self._bump.sql, self._bump.args(params)).fetchall()
            if not bumped:
                return None
            conn.execute(self._count.sql, self._count.args(params))
            return self._insert_at(conn, bumped[0][0], params)

        return await self.db.driver_now(run)

    async def begin_round(self, params: dict[str, Any]) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return bool(conn.execute(self._begin_round.sql,
                                     self._begin_round.args(params)).fetchall())

        return await self.db.driver_now(run)

    async def complete_round(self, params: dict[str, Any],
                             outputs: list[dict[str, Any]]) -> int | None:
        def run(conn: sqlite3.Connection) -> int | None:
            bumped = conn.execute(self._bump_round.sql,
                                  self._bump_round.args(params)).fetchall()
            if not bumped:
                return None
            seq = bumped[0][0]
            for index, output in enumerate(outputs):
                self._insert_at(conn, seq - len(outputs) + index, output)
            conn.execute(self._count.sql, self._count.args(params))
            return self._insert_at(conn, seq, params)

        return await self.db.driver_now(run)

    def _insert_at(self, conn: sqlite3.Connection, seq: int, params: dict[str, Any]) -> int:
        params["m_seq"] = seq
        conn.execute(self._insert.sql, self._insert.args(params))
        return seq


class PostgresTurnWrites:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
        self._begin = DriverStatement.compile(stmt.BEGIN_TURN_PG, dialect)
        self._complete = DriverStatement.compile(stmt.COMPLETE_TURN_PG, dialect)
        self._begin_round = DriverStatement.compile(stmt.BEGIN_ROUND_PG, dialect)
        #: COMPLETE_ROUND_PG by number of outputs, compiled when first needed
        self._rounds: dict[int, DriverStatement] = {}
        self._dialect = dialect

    async def begin(self, params: dict[str, Any]) -> int | None:
        return await self._one(self._begin, params)

    async def complete(self, params: dict[str, Any]) -> int | None:
        return await self._one(self._complete, params)

    async def begin_round(self, params: dict[str, Any]) -> bool:
        return await self._one(self._begin_round, params) is not None

    async def complete_round(self, params: dict[str, Any],
                             outputs: list[dict[str, Any]]) -> int | None:
        statement = self._rounds.get(len(outputs))
        if statement is None:
            statement = DriverStatement.compile(stmt.complete_round_pg(len(outputs)),
                                                self._dialect)
            self._rounds[len(outputs)] = statement
        named = dict(params)
        for index, output in enumerate(outputs):
            named.update({f"o{index}_{name[2:]}": value for name, value in output.items()})
        return await self._one(statement, named)

    async def _one(self, statement: DriverStatement, params: dict[str, Any]) -> int | None:
        args = statement.args(params)
        seq = await self.db.driver(lambda conn: conn.fetchval(statement.sql, *args))
        return None if seq is None else int(seq)
