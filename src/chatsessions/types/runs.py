"""Turns run in the background: a run as stored, so any replica can tell where it stands."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chatsessions.types.records import utcnow


class RunStatus(enum.StrEnum):
    """Where a turn run in the background stands (the names OpenAI's Responses use)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Run:
    """A turn run in the background, as stored: any replica can read where it stands.

    ``owner`` is the process running it, which renews ``expires_at`` while it works: a
    run still unfinished after that is one whose process died, and counts as failed.
    ``seq`` is the answer's seq once the turn has the chat (None while queued).
    """

    id: str
    tenant_id: str
    chat_id: str
    status: RunStatus = RunStatus.QUEUED
    seq: int | None = None
    error: str | None = None
    owner: str | None = None
    cancel_requested: bool = False
    #: what the caller wants kept with the run (the OpenAI layer: the request's echo)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
