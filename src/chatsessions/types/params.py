"""Generation options: a pydantic model, so the library and the HTTP API refuse the same
values."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GenerationParams(BaseModel):
    """Per-chat generation options; unknown keys are refused, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    stop: list[str] | None = Field(default=None, max_length=4)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)

    def merged(self, override: GenerationParams | None) -> GenerationParams:
        """Per-call values win over per-chat ones."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
