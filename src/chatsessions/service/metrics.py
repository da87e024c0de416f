"""Prometheus metrics for turns: counts by outcome, latency, tokens."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from chatsessions.types import Message


class Metrics:
    """Each app gets its own registry, so several apps in one process don't collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.turns = Counter("chatsessions_turns", "Turns by outcome", ["status"],
                             registry=self.registry)
        self.latency = Histogram(
            "chatsessions_turn_latency_seconds", "Model latency of successful turns",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.tokens = Counter("chatsessions_tokens", "Tokens used", ["kind"],
                              registry=self.registry)

    def turn_ok(self, answer: Message) -> None:
        self.turns.labels("ok").inc()
        if answer.latency_ms is not None:
            self.latency.observe(answer.latency_ms / 1000)
        self.tokens.labels("prompt").inc(answer.prompt_tokens)
        self.tokens.labels("completion").inc(answer.completion_tokens)

    def turn_failed(self) -> None:
        self.turns.labels("failed").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
