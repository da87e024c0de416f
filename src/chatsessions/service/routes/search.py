"""/search: full-text search across the tenant's chats."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from chatsessions.service.deps import SessionsDep
from chatsessions.service.schemas import LABEL_PATTERN, ErrorBody, SearchHitPublic, SearchResults

router = APIRouter(tags=["search"])


@router.get("/search", response_model=SearchResults, responses={422: {"model": ErrorBody}})
async def search(
    sessions: SessionsDep,
    q: Annotated[str, Query(min_length=1, max_length=1000, pattern=LABEL_PATTERN,
                            description="words that must all appear in a message")],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> SearchResults:
    """Messages of your chats containing every word of `q`, best match first; matched
    words are in [brackets] in each snippet."""
    hits = await sessions.search(q, limit)
    return SearchResults(data=[SearchHitPublic.of(hit) for hit in hits])
