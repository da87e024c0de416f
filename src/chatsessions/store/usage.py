"""Usage per tenant, model and hour: counters kept by the writes, read instead of messages.

What a report counts is what it always counted: a tenant's answers and summaries (model
calls) with status ok or replaced, a fork's copies excluded, under the message's model
(else the chat's), written in ``[start, end)``. Scanning those messages grew with the
data (0.5 s at 400,000 messages), so ``usage_counters`` holds the same figures per hour
(counted from the epoch), and every write that changes them changes the counters in its
own transaction:

- a turn's answer: inside the turn's write (``turn_writes``: one more statement in the
  SQLite transaction, one more CTE of the single PostgreSQL statement);
- a regenerated answer, appended rows (summaries, conversation items), an import:
  :func:`recount` of the rows written;
- deleting a chat, expired chats or a message takes their rows back out, and changing a
  chat's model moves its rows without a model of their own: the report stays exactly
  what the stored messages say, as before (deleting a chat does refund its usage).

A report (:func:`report`) reads the counters of the whole hours inside the range and
scans only the messages of the partial hours at its edges (by the ``created_at`` index):
exact for any range, costing O(hours x models) plus at most two partial hours' messages.
Counters per day made an edge day's scan the whole cost (147 ms at 13,000 messages a day);
an hour's is a 24th of that, and 24 counters a day more are still few rows to add up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from chatsessions.store.schema import chats, messages, usage_counters
from chatsessions.types import ModelUsage, Role, TurnStatus


class utc_hour(FunctionElement[int]):
    """The hour of a stored timestamp, counted from the epoch, as the counters key it. On
    SQLite a timestamp is stored as its UTC text (``strftime`` reads its first 19
    characters)."""

    type = sa.Integer()
    name = "utc_hour"
    inherit_cache = True


@compiles(utc_hour, "sqlite")
def _utc_hour_sqlite(element: utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.process(element.clauses, **kw)
    return f"(CAST(strftime('%s', substr({text}, 1, 19)) AS INTEGER) / 3600)"


@compiles(utc_hour, "postgresql")
def _utc_hour_postgresql(element: utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.process(element.clauses, **kw)
    return f"CAST(floor(extract(epoch FROM {text}) / 3600) AS INTEGER)"


class unindexed(FunctionElement[str]):
    """A column SQLite must not look up by index: without statistics it would rather walk
    the tenant's chats or the status index (every ok message) than the created_at range
    of the edge days."""

    type = sa.String()
    name = "unindexed"
    inherit_cache = True


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return f"+{compiler.process(element.clauses, **kw)}"  # SQLite's way to say it


_m, _c = messages.c, chats.c
MODEL = sa.func.coalesce(_m.model, _c.model)
ANSWER = _m.role == Role.ASSISTANT.value
#: a system row that stands for earlier turns: a paid model call too
SUMMARY = sa.and_(_m.role == Role.SYSTEM.value, _m.covers_seq.is_not(None))


def _counted(status: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    return sa.and_(
        sa.or_(ANSWER, SUMMARY),
        # a regenerated answer's predecessor was paid for too
        status.in_([TurnStatus.OK.value, TurnStatus.REPLACED.value]),
        # a fork's copies of its source's messages were paid for once
        sa.or_(_c.forked_at_seq.is_(None), _m.seq > _c.forked_at_seq),
    )


#: the rows a report counts
COUNTED = _counted(_m.status)
_JOINED = messages.join(chats, _c.id == _m.chat_id)
FIGURES = ("turns", "summaries", "prompt_tokens", "completion_tokens")
_KEY = ("tenant_id", "hour", "model")


def _sums() -> list[sa.ColumnElement[Any]]:
    """turns, summaries, prompt and completion tokens of the counted rows, in that order."""
    return [sa.func.count(sa.case((ANSWER, 1))), sa.func.count(sa.case((SUMMARY, 1))),
            sa.func.coalesce(sa.func.sum(_m.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(_m.completion_tokens), 0)]


def upsert(dialect: str, rows: sa.Select[Any]) -> Any:
    """Add ``rows`` (tenant, hour, model, then :data:`FIGURES`) to the counters."""
    insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(usage_counters)
    statement = insert.from_select([*_KEY, *FIGURES], rows)
    return statement.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={name: usage_counters.c[name] + statement.excluded[name] for name in FIGURES})


def recount(dialect: str, where: sa.ColumnElement[bool], sign: int = 1) -> Any:
    """Add (``sign`` 1) or take out (-1) the counted messages ``where`` selects: run it in
    the transaction that writes them, or before the one that deletes them."""
    hour = utc_hour(_m.created_at)
    sums = _sums() if sign > 0 else [-value for value in _sums()]
    rows = (sa.select(_c.tenant_id, hour, MODEL, *sums).select_from(_JOINED)
            .where(COUNTED, where).group_by(_c.tenant_id, hour, MODEL))
    return upsert(dialect, rows)


def any_counted(rows: list[Any]) -> bool:
    """Whether a write of these messages changes the counters at all (saves a statement)."""
    return any(m.role is Role.ASSISTANT
               or (m.role is Role.SYSTEM and m.covers_seq is not None) for m in rows)


def scan(tenant_id: str, start: datetime | None, end: datetime | None) -> sa.Select[Any]:
    """The report from the messages themselves: the partial days of a range, and the
    reference the counters must equal."""
    model = MODEL.label("model")
    ranged = start is not None or end is not None
    # a range walks the created_at index, not the tenant's chats nor the ok messages
    counted = _counted(unindexed(_m.status)) if ranged else COUNTED
    tenant = unindexed(_c.tenant_id) if ranged else _c.tenant_id
    query = (sa.select(model, *_sums()).select_from(_JOINED)
             .where(tenant == tenant_id, counted).group_by(MODEL))
    if start is not None:
        query = query.where(_m.created_at >= start)
    if end is not None:
        query = query.where(_m.created_at < end)
    return query


def _counted_hours(tenant_id: str, first: int | None, stop: int | None) -> sa.Select[Any]:
    counters = usage_counters.c
    query = (sa.select(counters.model, *(sa.func.sum(counters[n]) for n in FIGURES))
             .where(counters.tenant_id == tenant_id).group_by(counters.model))
    if first is not None:
        query = query.where(counters.hour >= first)
    if stop is not None:
        query = query.where(counters.hour < stop)
    return query


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)


def _hour(when: datetime) -> tuple[int, bool]:
    """The hour ``when`` falls in, and whether it is that hour's very start."""
    hour, rest = divmod(when - _EPOCH, _HOUR)
    return hour, not rest


def _start_of(hour: int) -> datetime:
    return _EPOCH + hour * _HOUR


def report(conn: Connection, tenant_id: str, start: datetime | None,
           end: datetime | None) -> list[ModelUsage]:
    """Usage in ``[start, end)``: counters for whole hours, messages for the rest."""
    start = None if start is None else start.astimezone(UTC)
    end = None if end is None else end.astimezone(UTC)
    # the whole hours: from the first hour's start at or after start to the last one at
    # or before end
    first = stop = None
    if start is not None:
        hour, whole = _hour(start)
        first = hour if whole else hour + 1
    if end is not None:
        stop = _hour(end)[0]
    queries: list[sa.Select[Any]] = []
    if first is not None and stop is not None and first >= stop:
        queries.append(scan(tenant_id, start, end))  # no whole hour: less than two hours
    else:
        queries.append(_counted_hours(tenant_id, first, stop))
        if start is not None and first is not None and start < _start_of(first):
            queries.append(scan(tenant_id, start, _start_of(first)))
        if end is not None and stop is not None and _start_of(stop) < end:
            queries.append(scan(tenant_id, _start_of(stop), end))
    totals: dict[str, list[int]] = {}
    for query in queries:
        for name, turns, summaries, prompt, completion in conn.execute(query):
            total = totals.setdefault(str(name), [0, 0, 0, 0])
            for i, value in enumerate((turns, summaries, prompt, completion)):
                total[i] += int(value or 0)
    return [ModelUsage(model=name, turns=turns, prompt_tokens=prompt,
                       completion_tokens=completion, summaries=summaries)
            for name, (turns, summaries, prompt, completion) in sorted(totals.items())
            if turns or summaries]  # an hour whose rows were all deleted again


def scan_report(conn: Connection, tenant_id: str, start: datetime | None,
                end: datetime | None) -> list[ModelUsage]:
    """:func:`report` the slow way, from every message (the reference in tests)."""
    return [ModelUsage(model=str(name), turns=int(turns), prompt_tokens=int(prompt),
                       completion_tokens=int(completion), summaries=int(summaries))
            for name, turns, summaries, prompt, completion in conn.execute(
                scan(tenant_id, start, end).order_by(sa.text("model")))]
