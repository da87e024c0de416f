"""SQLAlchemy Core table definitions (the migrations create them; queries use them)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTCDateTime = sa.DateTime(timezone=True)

chats = sa.Table(
    "chats",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("title", sa.Text),
    sa.Column("system_prompt", sa.Text, nullable=False),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("metadata", JSONType, nullable=False),
    sa.Column("parent_id", sa.String(64)),
    sa.Column("forked_at_seq", sa.Integer),
    sa.Column("message_count", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("archived_at", UTCDateTime),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("request_hash", sa.String(64)),
    sa.Column("context_policy", sa.String(16), nullable=False, server_default="trim"),
    sa.Column("tools", JSONType),
    sa.Column("history_version", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("tool_choice", sa.String(200)),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column(
        "chat_id", sa.String(64), sa.ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("model", sa.String(200)),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Integer),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("context_messages", sa.Integer),
    sa.Column("context_tokens", sa.Integer),
    sa.Column("covers_seq", sa.Integer),
    sa.Column("replaces_seq", sa.Integer),
    # JSON text, not a JSON column: written and read as-is on the driver path, never queried
    sa.Column("tool_calls", sa.Text),
    sa.Column("tool_call_id", sa.String(200)),
    # JSON text of the content's parts, only when it holds more than text (images)
    sa.Column("parts", sa.Text),
    sa.UniqueConstraint("chat_id", "idempotency_key", name="uq_messages_idempotency"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200)),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
)

#: Usage per tenant, hour (since the epoch) and model, kept by the writes that store
#: answers and summaries (``store/usage.py``): a usage report reads hours, not messages.
usage_counters = sa.Table(
    "usage_counters",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("hour", sa.Integer, primary_key=True),
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("turns", sa.BigInteger, nullable=False),
    sa.Column("summaries", sa.BigInteger, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
)

#: Turns run in the background: where each stands, readable by every replica. The
#: owner renews ``expires_at`` while it works and reads ``cancel_requested`` in the same
#: statement, so a cancel asked of any replica reaches the one running the turn.
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("chat_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("seq", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("owner", sa.String(64)),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("metadata", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime),
)
