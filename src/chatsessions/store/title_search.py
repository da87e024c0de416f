"""Title filtering by index: ``list_chats(title_contains=...)`` without a scan of chats.

A ``LIKE '%word%'`` cannot use a b-tree, so it read every chat of the tenant (0.1-0.2 s
at 100,000 chats). Migration 0007 adds trigram indexes. SQLite: ``chats_title_fts``, an
external-content FTS5 table with the trigram tokenizer over ``chats.title``, kept in step
by triggers (a title is written about once per chat); a substring of three characters or
more is the phrase of its trigrams there. PostgreSQL: a ``pg_trgm`` GIN index on the
title, which serves ``ILIKE`` as it is (its planner weighs the index against walking the
chats in order by its statistics). Shorter substrings have no trigram and scan, as
before. Matching ignores case on both (SQLite's trigram tokenizer folds Unicode case,
like PostgreSQL's ILIKE).

On SQLite the index is the fast way only for a substring few titles contain: one most
titles share ("Order" in "Order 4242") matched 100,000 titles, which the page's query
then had to hold against the tenant's chats (81 ms). So :func:`rows` first counts the
matches up to :data:`FEW`. Up to that many, the page is read by their rowids. More, and
the chats are walked newest first, :data:`WALK` at most, testing each title here until the
page is full: a common substring fills it after a few dozen. The test is the tokenizer's
own: ASCII case folded, and the only two other characters it folds into ASCII (the Kelvin
sign and the long s), so for a substring in ASCII both ways find exactly the same titles.
A substring with other characters, or a walk that ends before the page is full, reads every
match by its rowid.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from chatsessions.store.rows import escape_like
from chatsessions.store.schema import chats

#: up to this many matching titles, the page is read by their rowids
FEW = 500
#: at most this many of the tenant's chats are walked for a common substring
WALK = 2000

_ROWID: sa.ColumnClause[int] = sa.literal_column("chats.rowid", sa.Integer())
_MATCHES = sa.text("SELECT rowid FROM chats_title_fts WHERE chats_title_fts MATCH :phrase "
                   "LIMIT :count")
#: how the trigram tokenizer folds a title, for a substring in ASCII
_FOLD = str.maketrans({**dict(zip(string.ascii_uppercase, string.ascii_lowercase,
                                  strict=True)), "\u212a": "k", "\u017f": "s"})


def rows(conn: Connection, dialect: str, query: sa.Select[Any], text: str,
         limit: int | None) -> Sequence[RowMapping]:
    """The rows of ``query`` (chats in the page's order) whose title contains ``text``,
    case ignored: ``limit`` of them, or all with None."""
    if dialect != "sqlite" or len(text) < 3:
        where = query.where(chats.c.title.ilike(f"%{escape_like(text)}%", escape="\\"))
        return conn.execute(where.limit(limit)).mappings().all()
    phrase = '"' + text.replace('"', '""') + '"'  # the words as they are, no syntax
    ids = [row[0] for row in conn.execute(_MATCHES, {"phrase": phrase, "count": FEW + 1})]
    if len(ids) > FEW and limit is not None and text.isascii():
        walked = _walk(conn, query, text.translate(_FOLD), limit)
        if walked is not None:
            ids = walked
        else:
            ids = [row[0] for row in conn.execute(_MATCHES, {"phrase": phrase, "count": -1})]
    elif len(ids) > FEW:
        ids = [row[0] for row in conn.execute(_MATCHES, {"phrase": phrase, "count": -1})]
    if not ids:
        return []
    # by rowid: NOT INDEXED keeps SQLite from walking the tenant's chats instead
    found = query.where(_ROWID.in_(ids)).with_hint(chats, "NOT INDEXED", "sqlite")
    return conn.execute(found.limit(limit)).mappings().all()


def _walk(conn: Connection, query: sa.Select[Any], folded: str,
          limit: int) -> list[int] | None:
    """The rowids of the first ``limit`` titles containing ``folded`` among the first
    :data:`WALK` chats of ``query``; None when those were not enough to tell."""
    found: list[int] = []
    seen = 0
    walk = query.with_only_columns(_ROWID, chats.c.title).limit(WALK)
    for rowid, title in conn.execute(walk):
        seen += 1
        if title is not None and folded in title.translate(_FOLD):
            found.append(rowid)
            if len(found) == limit:
                return found
    return found if seen < WALK else None
