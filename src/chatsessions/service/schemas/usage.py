"""A tenant's usage report: turns, tokens and cost per model."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from chatsessions.types import UsageReport


class ModelUsagePublic(BaseModel):
    model: str
    turns: int = Field(description="answered turns")
    summaries: int = Field(description="summaries written under the summarize policy")
    prompt_tokens: int = Field(description="of the answers and the summaries")
    completion_tokens: int = Field(description="of the answers and the summaries")
    cost: float = Field(description="USD, from the price table; 0 when unpriced")
    priced: bool = Field(description="false when the price table has no entry for the model")


class UsagePublic(BaseModel):
    """A tenant's usage over [from, to); an open end means no bound."""

    start: datetime | None = Field(serialization_alias="from")
    end: datetime | None = Field(serialization_alias="to")
    models: list[ModelUsagePublic]
    turns: int
    summaries: int
    prompt_tokens: int
    completion_tokens: int
    cost: float = Field(description="USD; excludes unpriced models")
    unpriced: list[str] = Field(description="models used without a price")

    @classmethod
    def of(cls, report: UsageReport) -> UsagePublic:
        return cls(
            start=report.start, end=report.end,
            models=[ModelUsagePublic(model=m.model, turns=m.turns, summaries=m.summaries,
                                     prompt_tokens=m.prompt_tokens,
                                     completion_tokens=m.completion_tokens, cost=m.cost,
                                     priced=m.priced) for m in report.models],
            turns=report.turns, summaries=report.summaries, prompt_tokens=report.prompt_tokens,
            completion_tokens=report.completion_tokens, cost=report.cost,
            unpriced=report.unpriced,
        )
