"""chat tool choice: whether a chat's model must, may or must not call its tools

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10

One nullable ``String`` column beside ``chats.tools``: ``auto``, ``none``, ``required`` or
the name of one of the chat's tools; NULL leaves the provider's default. A plain
``ADD COLUMN``: no table copy, existing chats keep the default.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chats", sa.Column("tool_choice", sa.String(200)))


def downgrade() -> None:
    op.drop_column("chats", "tool_choice")
