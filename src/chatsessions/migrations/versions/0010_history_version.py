"""replicas: a chat's history version, and lease owners that name their host

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

``chats.history_version``: bumped by every change to what a turn sends other than an
append, so a replica's cached history is checked by the turn's first statement (existing
chats start at 0: no replica has a version cached yet). ``chats.lease_owner`` grows to
128 characters: an owner now names its replica, process and host
(``engine/holders.py``). SQLite does not enforce a VARCHAR's length, so only PostgreSQL
alters the column; both add the new one with a plain ``ADD COLUMN`` (no table copy).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chats", sa.Column("history_version", sa.BigInteger, nullable=False,
                                     server_default="0"))
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("chats", "lease_owner", type_=sa.String(128),
                        existing_type=sa.String(64))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE chats SET lease_owner = NULL, lease_expires_at = NULL "
                   "WHERE length(lease_owner) > 64")
        op.alter_column("chats", "lease_owner", type_=sa.String(64),
                        existing_type=sa.String(128))
    op.drop_column("chats", "history_version")
