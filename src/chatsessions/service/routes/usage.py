"""/usage: the tenant's answered turns, tokens and cost per model over a time range."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from chatsessions.service.deps import SessionsDep
from chatsessions.service.schemas import ErrorBody, UsagePublic

router = APIRouter(tags=["usage"])


@router.get("/usage", response_model=UsagePublic, responses={422: {"model": ErrorBody}})
async def usage(
    sessions: SessionsDep,
    start: Annotated[datetime | None, Query(
        alias="from", description="ISO 8601; answers given at or after this moment")] = None,
    end: Annotated[datetime | None, Query(
        alias="to", description="ISO 8601; answers given before this moment")] = None,
) -> UsagePublic:
    """Per model: answered turns, prompt and completion tokens, and their cost in USD from
    the service's price table. Models without a price cost 0 and are listed in
    `unpriced`. Copies of messages made by forking a chat are not counted again."""
    return UsagePublic.of(await sessions.usage(start, end))
