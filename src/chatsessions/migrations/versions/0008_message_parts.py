"""message parts: a message's content as text and images, when it holds images

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

One nullable ``Text`` column of JSON (OpenAI's list of ``text`` and ``image_url`` parts),
set only on messages that hold more than text; ``content`` keeps their text, so search,
titles and token counts read what they always did. A plain ``ADD COLUMN``, as in 0006:
no table copy, the SQLite full-text index stays valid, existing rows need no rewrite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("parts", sa.Text))


def downgrade() -> None:
    op.drop_column("messages", "parts")
