"""The SQL store's runs: turns run in the background (see ``schema.runs``).

Every write is one conditional statement: a finished run is never changed again, and only
its owner moves it on, so a run failed as abandoned cannot be revived by a late owner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chatsessions.store.engines import Database
from chatsessions.store.rows import _json, _utc
from chatsessions.store.schema import runs
from chatsessions.types import Run, RunStatus, utcnow

UNFINISHED = (RunStatus.QUEUED.value, RunStatus.IN_PROGRESS.value)
ABANDONED = "interrupted: the process running this response stopped"


def run_row(run: Run) -> dict[str, Any]:
    return {"id": run.id, "tenant_id": run.tenant_id, "chat_id": run.chat_id,
            "status": run.status.value, "seq": run.seq, "error": run.error, "owner": run.owner,
            "cancel_requested": run.cancel_requested, "metadata": dict(run.metadata),
            "created_at": run.created_at, "updated_at": run.updated_at,
            "expires_at": run.expires_at}


def to_run(row: Mapping[Any, Any]) -> Run:
    return Run(
        id=row["id"], tenant_id=row["tenant_id"], chat_id=row["chat_id"],
        status=RunStatus(row["status"]), seq=row["seq"], error=row["error"],
        owner=row["owner"], cancel_requested=bool(row["cancel_requested"]),
        metadata=_json(row["metadata"]), created_at=_utc(row["created_at"]) or utcnow(),
        updated_at=_utc(row["updated_at"]) or utcnow(), expires_at=_utc(row["expires_at"]))


class SQLRuns:
    """Mixed into ``SQLStore``: the ``Store`` protocol's run methods."""

    @property
    def db(self) -> Database:
        raise NotImplementedError

    async def create_run(self, run: Run) -> None:
        values = run_row(run)
        await self.db.write_now(lambda conn: conn.execute(runs.insert(), values))

    async def get_run(self, run_id: str, tenant_id: str) -> Run | None:
        query = runs.select().where(runs.c.id == run_id, runs.c.tenant_id == tenant_id)
        row = await self.db.read(lambda conn: conn.execute(query).mappings().first())
        return to_run(row) if row else None

    async def update_run(self, run_id: str, owner: str, status: RunStatus, *,
                         seq: int | None = None, error: str | None = None) -> bool:
        values: dict[str, Any] = {"status": status.value, "updated_at": utcnow()}
        if seq is not None:
            values["seq"] = seq
        if error is not None:
            values["error"] = error
        query = (runs.update().where(runs.c.id == run_id, runs.c.owner == owner,
                                     runs.c.status.in_(UNFINISHED)).values(values))
        return await self.db.write_now(lambda conn: bool(conn.execute(query).rowcount))

    async def renew_run(self, run_id: str, owner: str, until: datetime) -> bool | None:
        query = (runs.update().where(runs.c.id == run_id, runs.c.owner == owner,
                                     runs.c.status.in_(UNFINISHED))
                 .values(expires_at=until).returning(runs.c.cancel_requested))

        def run(conn: Connection) -> bool | None:
            row = conn.execute(query).first()
            return None if row is None else bool(row[0])

        return await self.db.write_now(run)

    async def cancel_run(self, run_id: str, tenant_id: str) -> Run | None:
        query = (runs.update().where(runs.c.id == run_id, runs.c.tenant_id == tenant_id,
                                     runs.c.status.in_(UNFINISHED))
                 .values(cancel_requested=True, updated_at=utcnow()))
        await self.db.write_now(lambda conn: conn.execute(query))
        return await self.get_run(run_id, tenant_id)

    async def fail_abandoned_runs(self, now: datetime, owners: Sequence[str] = (),
                                  run_id: str | None = None) -> int:
        gone = [runs.c.expires_at < now]
        if owners:
            gone.append(runs.c.owner.in_(list(owners)))
        where = [runs.c.status.in_(UNFINISHED), sa.or_(*gone)]
        if run_id is not None:
            where.append(runs.c.id == run_id)
        query = runs.update().where(*where).values(
            status=RunStatus.FAILED.value, error=ABANDONED, updated_at=now)
        return await self.db.write_now(lambda conn: int(conn.execute(query).rowcount or 0))
