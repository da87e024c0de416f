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

import math
import re
import unicodedata
from collections import Counter
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
#: an index in order, so the database stops after this many. PostgreSQL tests each row's
#: text as it walks them newest first (some 25 us a row), so fewer is faster: 200 is ten
#: pages of the default 20.
CANDIDATES = 200

# SQLite: FTS5 yields matches by rowid (the order messages were written) newest first
# and stops after CANDIDATES of the tenant's. They are ranked here (:func:`_ranked`), not by
# FTS5's bm25(): bm25 weighs each word by how many messages of the whole index contain it,
# and FTS5 counts those by reading the word's every match (36 of the 49 ms a common word
# took at 400,000 messages, however few candidates). Snippets are made for the page's rows
# only, in one pass over the matches between its lowest and highest rowid: looking a match
# up by rowid makes FTS5 set up the whole query again each time (0.5 ms a row for a common
# word), so ``rowid + 0`` keeps the page's list from being passed to it.
_SQLITE_CANDIDATES = sa.text("""
    SELECT m.rowid AS id, m.chat_id, m.seq, m.role, m.created_at, m.content
    FROM messages_fts
    JOIN messages AS m ON m.rowid = messages_fts.rowid
    JOIN chats AS c ON c.id = m.chat_id
    WHERE messages_fts MATCH :q AND c.tenant_id = :tenant
    ORDER BY messages_fts.rowid DESC
    LIMIT :candidates
""").columns(created_at=UTCDateTime)
_SQLITE_SNIPPETS = sa.text(f"""
    SELECT rowid, snippet(messages_fts, 0, '{MARK_START}', '{MARK_END}', '{ELLIPSIS}', 16)
    FROM messages_fts
    WHERE messages_fts MATCH :q AND rowid BETWEEN :low AND :high AND (rowid + 0) IN :ids
""").bindparams(sa.bindparam("ids", expanding=True))

# PostgreSQL: the newest CANDIDATES matches (the planner walks the created_at index
# backwards for a common word, or the GIN index for a rare one), then ts_rank on those.
# The tenant is a subquery per match, not a join: guessing 2,000 matches for a rare word,
# the planner hashed every chat of the tenant to join 47 messages (42 ms).
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
            WHERE to_tsvector('simple', m.content) @@ plainto_tsquery('simple', :q)
              AND (SELECT c.tenant_id FROM chats AS c WHERE c.id = m.chat_id) = :tenant
            ORDER BY m.created_at DESC
            LIMIT :candidates
        ) AS cand
        ORDER BY rank DESC, cand.created_at DESC
        LIMIT :limit
    ) AS hit
    ORDER BY hit.rank DESC, hit.created_at DESC
""").columns(created_at=UTCDateTime)


_SERIAL = sa.text("SELECT set_config('max_parallel_workers_per_gather', '0', true), "
                  "set_config('jit', 'off', true), "
                  "set_config('plan_cache_mode', 'force_custom_plan', true)")

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
        return _sqlite(conn, query, params)
    params["q"] = query
    # a parallel plan's workers take longer to start (11 ms) than a rare word takes to find,
    # and the walk's cost (the planner cannot tell it stops early) made it compile the
    # query with JIT (16 ms to 1 s); and a prepared statement's generic plan, blind to the
    # word, read all 400,000 matches of a common one (1.7 s)
    conn.execute(_SERIAL)
    return [
        SearchHit(chat_id=row["chat_id"], seq=row["seq"], role=Role(row["role"]),
                  snippet=row["snippet"], created_at=_utc(row["created_at"]))
        for row in conn.execute(_POSTGRESQL, params).mappings()
    ]


def _sqlite(conn: Connection, query: str, params: dict[str, Any]) -> list[SearchHit]:
    params["q"] = fts5_query(query)
    page = _ranked(list(conn.execute(_SQLITE_CANDIDATES, params).mappings()),
                   words(query))[:params["limit"]]
    ids = [row["id"] for row in page]
    snippets: dict[int, str] = {} if not ids else dict(conn.execute(
        _SQLITE_SNIPPETS, {"q": params["q"], "ids": ids, "low": min(ids),
                           "high": max(ids)}).all())
    return [SearchHit(chat_id=row["chat_id"], seq=row["seq"], role=Role(row["role"]),
                      snippet=snippets.get(row["id"], ""), created_at=_utc(row["created_at"]))
            for row in page]


#: BM25's constants, FTS5's own
_K1, _B = 1.2, 0.75


def _ranked(rows: list[Any], wanted: list[str]) -> list[Any]:
    """The candidates best first: BM25 over the candidates as their own collection (a
    word's weight from how many of them contain it), newest first among equals. The words
    are folded as FTS5's tokenizer folds them (case and diacritics)."""
    if not rows:
        return rows
    terms = {_fold(word) for word in wanted}
    counts = []
    for row in rows:
        tokens = Counter(words(_fold(row["content"])))
        counts.append(({t: tokens[t] for t in terms}, tokens.total()))
    average = sum(length for _, length in counts) / len(counts) or 1.0
    df = {t: sum(1 for tf, _ in counts if tf[t]) for t in terms}
    idf = {t: math.log(1 + (len(rows) - df[t] + 0.5) / (df[t] + 0.5)) for t in terms}
    scores = [sum(idf[t] * tf[t] * (_K1 + 1)
                  / (tf[t] + _K1 * (1 - _B + _B * length / average)) for t in terms)
              for tf, length in counts]
    newest = [-_utc(row["created_at"]).timestamp() for row in rows]
    order = sorted(range(len(rows)), key=lambda i: (-scores[i], newest[i], -rows[i]["id"]))
    return [rows[i] for i in order]


def _fold(text: str) -> str:
    """Text as FTS5's unicode61 tokenizer indexes it: case folded, diacritics removed."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


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
