"""tool calls: an answer's calls, a tool output's call id, a chat's tool definitions

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Plain ``ADD COLUMN`` of nullable columns, as in 0004: no table copy, so the SQLite
full-text index (keyed by ``messages`` rowid) stays valid and existing rows need no
rewrite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("tool_calls", sa.Text))
    op.add_column("messages", sa.Column("tool_call_id", sa.String(200)))
    op.add_column("chats", sa.Column(
        "tools", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")))


def downgrade() -> None:
    op.drop_column("chats", "tools")
    op.drop_column("messages", "tool_call_id")
    op.drop_column("messages", "tool_calls")
