"""Answers about many chats at once: a tenant's usage per model over a time range, and the
messages a search finds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chatsessions.types.enums import Role


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model's share of a tenant's usage over a time range. The tokens are those of
    its answers and of the summaries it wrote (model calls too, paid for alike)."""

    model: str
    turns: int
    prompt_tokens: int
    completion_tokens: int
    cost: float = 0.0
    #: False when the price table has no entry for this model (its cost counts as 0).
    priced: bool = False
    #: Summaries written under the ``summarize`` context policy (not turns).
    summaries: int = 0


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Answered turns, tokens and cost per model, over ``[start, end)`` (open ends: all)."""

    start: datetime | None
    end: datetime | None
    models: list[ModelUsage]

    @property
    def turns(self) -> int:
        return sum(m.turns for m in self.models)

    @property
    def summaries(self) -> int:
        return sum(m.summaries for m in self.models)

    @property
    def prompt_tokens(self) -> int:
        return sum(m.prompt_tokens for m in self.models)

    @property
    def completion_tokens(self) -> int:
        return sum(m.completion_tokens for m in self.models)

    @property
    def cost(self) -> float:
        return sum(m.cost for m in self.models)

    @property
    def unpriced(self) -> list[str]:
        """Models used without a price: their cost is missing from the total."""
        return [m.model for m in self.models if not m.priced]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A message matching a search: where it is and the matching words in context."""

    chat_id: str
    seq: int
    role: Role
    snippet: str
    created_at: datetime
