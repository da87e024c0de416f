"""Full-text search over messages: SQLite FTS5 and PostgreSQL text search.

Migration 0003 keeps the index: on SQLite an external-content FTS5 table, ``messages_fts``;
on PostgreSQL a GIN index on ``to_tsvector('simple', content)``. On SQLite new messages are
indexed in batches (migration 0005): :func:`catch_up` runs with every WAL checkpoint and
before any search that finds messages the index does not cover yet. Both take the user's
words as plain words (every one must appear), never as query syntax.

A search ranks the newest :data:`CANDIDATES` matches of the tenant, not every match: the
first page costs the same whatever the size of the history. With fewer matches than that
(a rare word, a small tenant) the page is exactly the best-ranked of all of them; with more,
it is the best-ranked of the newest ones.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from chatsessions.store.schema import UTCDateTime
from chatsessions.types import Role, SearchHit

#: How matched words are marked in snippets.
MARK_START, MARK_END, ELLIPSIS = "[", "]", "…"

#: How many of the newest matches are ranked for the first page. Ranking every match
#: made a common word cost 0.7 s at 400,000 messages; the newest matches come straight off
#: an index in order, so the database stops after this many.
CANDIDATES = 500

# SQLite: FTS5 yields matches by rowid (the order messages were written) newest first
# and stops after CANDIDATES of the tenant's; bm25 ranks those; the snippet is made for the
# page's rows only.
_SQLITE = sa.text(f"""
    WITH candidates AS (
        SELECT messages_fts.rowid AS id, bm25(messages_fts) AS score, m.created_at
        FROM messages_fts
        JOIN messages AS m ON m.rowid = messages_fts.rowid
        JOIN chats AS c ON c.id = m.chat_id
        WHERE messages_fts MATCH :q AND c.tenant_id = :tenant
        ORDER BY messages_fts.rowid DESC
        LIMIT :candidates
    ), page AS (
        SELECT id, score, created_at FROM candidates
        ORDER BY score, created_at DESC
        LIMIT :limit
    )
    SELECT m.chat_id, m.seq, m.role, m.created_at,
           snippet(messages_fts, 0, '{MARK_START}', '{MARK_END}', '{ELLIPSIS}', 16) AS snippet
    FROM page
    JOIN messages_fts ON messages_fts.rowid = page.id
    JOIN messages AS m ON m.rowid = page.id
    WHERE messages_fts MATCH :q
    ORDER BY page.score, page.created_at DESC
""").columns(created_at=UTCDateTime)

# PostgreSQL: the newest CANDIDATES matches (the planner walks the created_at index
# backwards for a common word, or the GIN index for a rare one), then ts_rank on those.
_POSTGRESQL = sa.text(f"""
    SELECT hit.chat_id, hit.seq, hit.role, hit.created_at,
           ts_headline('simple', hit.content, plainto_tsquery('simple', :q),
                       'StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=24, MinWords=8')
               AS snippet
    FROM (
        SELECT cand.*,
               ts_rank(to_tsvector('simple', cand.content), plainto_tsquery('simple', :q))
                   AS rank
        FROM (
            SELECT m.chat_id, m.seq, m.role, m.created_at, m.content
            FROM messages AS m
            JOIN chats AS c ON c.id = m.chat_id
            WHERE to_tsvector('simple', m.content) @@ plainto_tsquery('simple', :q)
              AND c.tenant_id = :tenant
            ORDER BY m.created_at DESC
            LIMIT :candidates
        ) AS cand
        ORDER BY rank DESC, cand.created_at DESC
        LIMIT :limit
    ) AS hit
    ORDER BY hit.rank DESC, hit.created_at DESC
""").columns(created_at=UTCDateTime)


#: Whether messages were written since the index last caught up (SQLite).
_BEHIND = sa.text("SELECT (SELECT coalesce(max(rowid), 0) FROM messages) > indexed_rowid "
                  "FROM search_progress")
_CATCH_UP = (
    sa.text("INSERT INTO messages_fts(rowid, content) SELECT rowid, content FROM messages "
            "WHERE rowid > (SELECT indexed_rowid FROM search_progress) ORDER BY rowid"),
    sa.text("UPDATE search_progress SET indexed_rowid = "
            "(SELECT coalesce(max(rowid), 0) FROM messages)"),
)


def behind(conn: Connection) -> bool:
    return bool(conn.execute(_BEHIND).scalar())


def catch_up(conn: Connection) -> None:
    """Index every message written since the last catch-up (SQLite): one FTS5 segment for
    the lot, instead of one per transaction. Runs in a write transaction, so no message
    can be written in between."""
    if behind(conn):
        for statement in _CATCH_UP:
            conn.execute(statement)


def words(query: str) -> list[str]:
    """The words of a query, as the search matches them."""
    return re.findall(r"\w+", query.lower())


def fts5_query(query: str) -> str:
    """Every word as a quoted FTS5 string: plain words, never FTS5 syntax."""
    return " ".join(f'"{word}"' for word in words(query))


def search(conn: Connection, dialect: str, tenant_id: str, query: str,
           limit: int) -> list[SearchHit]:
    if not words(query):
        return []
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit,
                              "candidates": max(CANDIDATES, limit)}
    if dialect == "sqlite":
        statement, params["q"] = _SQLITE, fts5_query(query)
    else:
        statement, params["q"] = _POSTGRESQL, query
    return [
        SearchHit(chat_id=row["chat_id"], seq=row["seq"], role=Role(row["role"]),
                  snippet=row["snippet"], created_at=_utc(row["created_at"]))
        for row in conn.execute(statement, params).mappings()
    ]


def snippet(content: str, query: str, width: int = 16) -> str:
    """A snippet like the databases' for stores without a full-text index: the words
    around the first match, matches marked."""
    wanted = set(words(query))
    tokens = content.split()
    first = next((i for i, t in enumerate(tokens) if set(words(t)) & wanted), 0)
    start = max(0, first - width // 2)
    shown = [f"{MARK_START}{t}{MARK_END}" if set(words(t)) & wanted else t
             for t in tokens[start:start + width]]
    return ((ELLIPSIS if start else "") + " ".join(shown)
            + (ELLIPSIS if start + width < len(tokens) else ""))


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
