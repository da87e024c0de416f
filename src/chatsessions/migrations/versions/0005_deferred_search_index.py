"""index new messages for search in batches, not one by one as they are written

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

SQLite only. With a trigger per insert, FTS5 wrote a new index segment in every
transaction: half the pages a turn wrote (11 of 22) and a quarter of its time. Now
``search_progress`` remembers the highest ``messages`` rowid the index covers, and
``store/search.py`` indexes everything after it in one statement: on the writer thread
with every WAL checkpoint, and before any search (so search still sees every message).
Deleting or editing a message touches the index only if the index covers it; a delete
also lowers the mark to the highest rowid left, so a rowid SQLite hands out again after
the newest messages were deleted is never taken for indexed.
"""

from collections.abc import Sequence
from importlib import import_module

from alembic import op

#: the triggers this revision replaces, restored as they were by the downgrade
_V3 = import_module("chatsessions.migrations.versions.0003_search")

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COVERED = "old.rowid <= (SELECT indexed_rowid FROM search_progress)"
_HIGHEST = "(SELECT coalesce(max(rowid), 0) FROM messages)"

SQLITE_UP = [
    "CREATE TABLE search_progress ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), indexed_rowid INTEGER NOT NULL)",
    f"INSERT INTO search_progress (id, indexed_rowid) VALUES (1, {_HIGHEST})",
    "DROP TRIGGER messages_fts_insert",
    "DROP TRIGGER messages_fts_delete",
    "DROP TRIGGER messages_fts_update",
    f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN {_COVERED} BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); "
    f"UPDATE search_progress SET indexed_rowid = {_HIGHEST} "
    f"WHERE indexed_rowid > {_HIGHEST}; END",
    f"CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages WHEN {_COVERED} "
    "BEGIN INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content); END",
]
SQLITE_DOWN = [
    "DROP TRIGGER messages_fts_update",
    "DROP TRIGGER messages_fts_delete",
    "DROP TABLE search_progress",
    *_V3.SQLITE_TRIGGERS,
    _V3.SQLITE_REBUILD,
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DOWN:
            op.execute(statement)
