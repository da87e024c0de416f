"""Prometheus metrics for turns (counts by outcome, latency, tokens) and periodic sweeps.

Under ``chatsessions serve --workers N`` each worker is a process of its own: ``serve``
sets ``PROMETHEUS_MULTIPROC_DIR`` before they start, every worker's metrics then live in
files there, and a scrape answered by any worker adds them all up (prometheus_client's
multiprocess mode). There are no gauges: counters and histograms add up across workers
as they are.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from chatsessions.types import Message

#: set by ``serve`` for several workers (and read by prometheus_client at import)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


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
        # Each labelled child looked up once: ``labels()`` costs more than ``inc()``.
        self._ok, self._failed = self.turns.labels("ok"), self.turns.labels("failed")
        self._prompt = self.tokens.labels("prompt")
        self._completion = self.tokens.labels("completion")
        self.sweeps = Counter(
            "chatsessions_sweeps",
            "Periodic sweeps run (by the one process holding the sweep lock)",
            registry=self.registry)

    def turn_ok(self, answer: Message) -> None:
        self._ok.inc()
        if answer.latency_ms is not None:
            self.latency.observe(answer.latency_ms / 1000)
        self._prompt.inc(answer.prompt_tokens)
        self._completion.inc(answer.completion_tokens)

    def turn_failed(self) -> None:
        self._failed.inc()

    def render(self) -> bytes:
        """This process's metrics, or with several workers all of theirs."""
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def process_exiting(self) -> None:
        """A worker stops: its live gauges (none yet) stop counting; its counters stay."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
