"""lookups that do not grow with the data: usage counters, a created_at index, title trigrams

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

``usage_counters``: a tenant's answers, summaries and tokens per model and UTC day, kept
by the writes from now on (``store/usage.py``) and filled here from the messages already
stored, by the same rules the usage report has always applied. ``ix_messages_created``:
the partial days at the edges of a usage range, and search's newest matches on
PostgreSQL. Title filtering: on SQLite an external-content FTS5 table with the trigram
tokenizer over ``chats.title``, kept in step by triggers; on PostgreSQL a ``pg_trgm`` GIN
index on the title (the extension is trusted: the database owner may create it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DAY = {"sqlite": "substr(m.created_at, 1, 10)",
        "postgresql": "CAST(m.created_at AT TIME ZONE 'UTC' AS DATE)"}
_SUMMARY = "m.role = 'system' AND m.covers_seq IS NOT NULL"


def _backfill(day: str) -> str:
    return (
        "INSERT INTO usage_counters (tenant_id, model, day, turns, summaries, "
        "prompt_tokens, completion_tokens) "
        f"SELECT c.tenant_id, coalesce(m.model, c.model), {day}, "
        "count(CASE WHEN m.role = 'assistant' THEN 1 END), "
        f"count(CASE WHEN {_SUMMARY} THEN 1 END), "
        "coalesce(sum(m.prompt_tokens), 0), coalesce(sum(m.completion_tokens), 0) "
        "FROM messages AS m JOIN chats AS c ON c.id = m.chat_id "
        f"WHERE (m.role = 'assistant' OR ({_SUMMARY})) AND m.status IN ('ok', 'replaced') "
        "AND (c.forked_at_seq IS NULL OR m.seq > c.forked_at_seq) "
        f"GROUP BY c.tenant_id, coalesce(m.model, c.model), {day}"
    )


_TITLE_DELETE = ("INSERT INTO chats_title_fts(chats_title_fts, rowid, title) "
                 "SELECT 'delete', old.rowid, old.title WHERE old.title IS NOT NULL; ")
_TITLE_INSERT = ("INSERT INTO chats_title_fts(rowid, title) "
                 "SELECT new.rowid, new.title WHERE new.title IS NOT NULL; ")
SQLITE_UP = [
    "CREATE VIRTUAL TABLE chats_title_fts USING fts5("
    "title, content='chats', content_rowid='rowid', tokenize='trigram')",
    f"CREATE TRIGGER chats_title_insert AFTER INSERT ON chats BEGIN {_TITLE_INSERT}END",
    f"CREATE TRIGGER chats_title_delete AFTER DELETE ON chats BEGIN {_TITLE_DELETE}END",
    "CREATE TRIGGER chats_title_update AFTER UPDATE OF title ON chats BEGIN "
    f"{_TITLE_DELETE}{_TITLE_INSERT}END",
    "INSERT INTO chats_title_fts(chats_title_fts) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER chats_title_update",
    "DROP TRIGGER chats_title_delete",
    "DROP TRIGGER chats_title_insert",
    "DROP TABLE chats_title_fts",
]
POSTGRESQL_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_chats_title_trgm ON chats USING GIN (title gin_trgm_ops)",
]
POSTGRESQL_DOWN = ["DROP INDEX ix_chats_title_trgm"]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "usage_counters",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("turns", sa.BigInteger, nullable=False),
        sa.Column("summaries", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    )
    op.execute(_backfill(_DAY[dialect]))
    op.create_index("ix_messages_created", "messages", ["created_at"])
    for statement in {"sqlite": SQLITE_UP, "postgresql": POSTGRESQL_UP}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_DOWN, "postgresql": POSTGRESQL_DOWN}.get(dialect, []):
        op.execute(statement)
    op.drop_index("ix_messages_created", "messages")
    op.drop_table("usage_counters")
