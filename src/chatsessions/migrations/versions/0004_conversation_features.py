"""context policies, what each answer saw, summaries and regenerated answers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Plain ``ADD COLUMN`` everywhere (no batch copy): ``messages`` keeps its rowids, so the
SQLite full-text table and its triggers from 0003 stay valid.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MESSAGE_COLUMNS = ("context_messages", "context_tokens", "covers_seq", "replaces_seq")


def upgrade() -> None:
    op.add_column("chats", sa.Column("context_policy", sa.String(16), nullable=False,
                                     server_default="trim"))
    for name in MESSAGE_COLUMNS:
        op.add_column("messages", sa.Column(name, sa.Integer))


def downgrade() -> None:
    for name in reversed(MESSAGE_COLUMNS):
        op.drop_column("messages", name)
    op.drop_column("chats", "context_policy")
