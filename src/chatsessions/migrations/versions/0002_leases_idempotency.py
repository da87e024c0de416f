"""turn leases across replicas; idempotent chat creation

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64)))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("idempotency_key", sa.String(200)))
        batch.add_column(sa.Column("request_hash", sa.String(64)))
    op.create_index("uq_chats_idempotency", "chats", ["tenant_id", "idempotency_key"],
                    unique=True)
    op.create_index("ix_messages_idempotency_age", "messages", ["created_at"],
                    postgresql_where=sa.text("idempotency_key IS NOT NULL"),
                    sqlite_where=sa.text("idempotency_key IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_messages_idempotency_age", "messages")
    op.drop_index("uq_chats_idempotency", "chats")
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
