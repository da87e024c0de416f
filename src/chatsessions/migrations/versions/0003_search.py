"""full-text search over messages

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

SQLite: an external-content FTS5 table over ``messages`` (keyed by its rowid), kept in step
by triggers, and filled from the messages already stored. A later migration that rebuilds
``messages`` (batch mode copies the table) must recreate the triggers and run the FTS
table's 'rebuild', since rowids and triggers do not survive the copy.
PostgreSQL: a GIN index on the expression the search query uses.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: keep the index in step with every write (0005 replaces them; its downgrade restores them)
SQLITE_TRIGGERS = [
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.rowid, old.content); "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content); END",
]
SQLITE_REBUILD = "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')"
SQLITE_UP = [
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "content, content='messages', content_rowid='rowid')",
    *SQLITE_TRIGGERS,
    SQLITE_REBUILD,
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS messages_fts_update",
    "DROP TRIGGER IF EXISTS messages_fts_delete",
    "DROP TRIGGER IF EXISTS messages_fts_insert",
    "DROP TABLE IF EXISTS messages_fts",
]
POSTGRESQL_UP = [
    "CREATE INDEX IF NOT EXISTS ix_messages_fts ON messages "
    "USING GIN (to_tsvector('simple', content))",
]
POSTGRESQL_DOWN = ["DROP INDEX IF EXISTS ix_messages_fts"]


def _run(statements: dict[str, list[str]]) -> None:
    for statement in statements.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def upgrade() -> None:
    _run({"sqlite": SQLITE_UP, "postgresql": POSTGRESQL_UP})


def downgrade() -> None:
    _run({"sqlite": SQLITE_DOWN, "postgresql": POSTGRESQL_DOWN})
