"""Search results: the messages that match, with the matching words in context."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from chatsessions.types import SearchHit


class SearchHitPublic(BaseModel):
    chat_id: str
    seq: int
    role: Literal["system", "user", "assistant", "tool"]
    snippet: str = Field(description="the matching words in context, marked [like this]")
    created_at: datetime

    @classmethod
    def of(cls, hit: SearchHit) -> SearchHitPublic:
        return cls(chat_id=hit.chat_id, seq=hit.seq, role=hit.role.value, snippet=hit.snippet,
                   created_at=hit.created_at)


class SearchResults(BaseModel):
    data: list[SearchHitPublic]
