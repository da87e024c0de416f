"""The core contract: what a chat, a message and a turn's usage look like."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class TurnStatus(enum.StrEnum):
    """A message's status: only ``ok`` messages are ever shown to the model."""

    OK = "ok"
    PENDING = "pending"
    FAILED = "failed"
    #: an answer kept as an alternative after it was regenerated
    REPLACED = "replaced"


class ContextPolicy(enum.StrEnum):
    """What to do when a chat outgrows the model's context window."""

    #: drop the oldest whole turns
    TRIM = "trim"
    #: replace the turns trimming would drop with a model-written summary
    SUMMARIZE = "summarize"
    #: send everything; a chat too long for the window is refused
    NONE = "none"


def utcnow() -> datetime:
    return datetime.now(UTC)


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


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer of the model, as a backend returns it (nothing stored): its text, the
    tokens it took, the model that wrote it, and why it stopped (``stop``, ``length``...)."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None


#: A streamed model call yields text deltas, then exactly one final ``Completion``.
StreamItem = str | Completion


@dataclass(frozen=True, slots=True)
class Chat:
    id: str
    system_prompt: str
    tenant_id: str = "default"
    title: str | None = None
    backend: str = "local"
    model: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    forked_at_seq: int | None = None
    message_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    archived_at: datetime | None = None
    expires_at: datetime | None = None
    context_policy: ContextPolicy = ContextPolicy.TRIM

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True, slots=True)
class Message:
    """One stored message; ``seq`` orders a chat's messages (the system prompt is seq 0)."""

    chat_id: str
    seq: int
    role: Role
    content: str
    status: TurnStatus = TurnStatus.OK
    error: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int | None = None
    created_at: datetime = field(default_factory=utcnow)
    idempotency_key: str | None = None
    #: on answers: how many earlier messages (system prompt and summary included) and
    #: how many tokens the model was shown
    context_messages: int | None = None
    context_tokens: int | None = None
    #: on summaries (role system): the last seq the summary stands for
    covers_seq: int | None = None
    #: on regenerated answers: the seq of the answer this one replaced
    replaces_seq: int | None = None

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)

    def as_openai(self) -> dict[str, str]:
        """The ``{"role", "content"}`` dict the tutorial kept in its history list."""
        # ``_value_`` is the plain attribute behind ``.value`` (an enum property, twice
        # as slow): this runs for every message of every context.
        return {"role": self.role._value_, "content": self.content}

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, enum.Enum):
            out[key] = value.value
        else:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A tenant's API key as stored: only the SHA-256 of the secret, never the secret."""

    id: str
    tenant_id: str
    key_hash: str
    name: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    revoked_at: datetime | None = None


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
