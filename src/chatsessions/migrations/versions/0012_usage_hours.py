"""usage counters per hour: a range's partial edges cost two hours of messages, not two days

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

``usage_counters`` is keyed by the hour (counted from the epoch) instead of the UTC day,
tenant and hour first so a range of hours is a range of the key. The counters always
equal the stored messages, so both directions rebuild them from the messages by the rules
the report applies (0007's backfill, per day, on the way down).
"""

from collections.abc import Sequence
from importlib import import_module

import sqlalchemy as sa
from alembic import op

#: the per-day table and its backfill, restored by the downgrade
_V7 = import_module("chatsessions.migrations.versions.0007_usage_counters")

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOUR = {"sqlite": "(CAST(strftime('%s', substr(m.created_at, 1, 19)) AS INTEGER) / 3600)",
        "postgresql": "CAST(floor(extract(epoch FROM m.created_at) / 3600) AS INTEGER)"}


def backfill(hour: str) -> str:
    """The counters per tenant, hour and model, from the messages."""
    text: str = _V7._backfill(hour)
    return text.replace(
        "(tenant_id, model, day,", "(tenant_id, model, hour,")


def _table(key: sa.Column[object]) -> None:
    op.create_table(
        "usage_counters",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        key,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("turns", sa.BigInteger, nullable=False),
        sa.Column("summaries", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    )


def upgrade() -> None:
    op.drop_table("usage_counters")
    _table(sa.Column("hour", sa.Integer, primary_key=True))
    op.execute(backfill(HOUR[op.get_bind().dialect.name]))


def downgrade() -> None:
    op.drop_table("usage_counters")
    _table(sa.Column("day", sa.Date, primary_key=True))
    op.execute(_V7._backfill(_V7._DAY[op.get_bind().dialect.name]))
