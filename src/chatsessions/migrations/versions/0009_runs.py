"""runs: turns run in the background, their status readable by every replica

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

A new table, nothing else touched. ``ix_runs_unfinished`` finds the runs a dead process
left behind (status, then expiry) without reading finished ones.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("chat_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("owner", sa.String(64)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_runs_unfinished", "runs", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_unfinished", "runs")
    op.drop_table("runs")
