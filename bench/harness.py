"""What every benchmark shares: the fake model process, timers, backends, a throwaway database.

The model is ``chatsessions.testing.FakeLLMServer`` run in a *separate process*: on 2 cores
an in-process server shares the GIL with the client, so its request handling would steal
time from (and add switching delays to) the code under test. Model time is then measured
on the client side by one timer class, wrapped around the model call on every side.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import asyncpg

from chatsessions.backends import Backend
from chatsessions.backends.base import ChatMessages, Completion, StreamItem
from chatsessions.types import GenerationParams, Usage

PG_URL = os.environ.get("CHATSESSIONS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SYSTEM_PROMPT = "You are a customer service attendant. Answer briefly and politely."
MODEL = "fake-model"  # unknown to tiktoken: token counts use the cheap estimate, as in tests


def user_text(chat: int, turn: int) -> str:
    """The user's message for ``turn`` of ``chat``: the same on every side of a comparison."""
    return f"Turn {turn}: I'm having trouble with order #{1000 + chat}. Can you help me track it?"


class ModelTimer:
    """Seconds spent inside model calls; the same class times every side of a comparison."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.last = 0.0

    @contextlib.contextmanager
    def time(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.last = time.perf_counter() - started
            self.seconds += self.last
            self.calls += 1

    def reset(self) -> None:
        self.seconds, self.calls, self.last = 0.0, 0, 0.0


class TimedBackend:
    """A real backend with its model calls timed; everything else is delegated untouched."""

    def __init__(self, inner: Backend, timer: ModelTimer) -> None:
        self.inner, self.timer = inner, timer
        self.name, self.default_model = inner.name, inner.default_model

    async def complete(
        self, messages: ChatMessages, params: GenerationParams, model: str
    ) -> Completion:
        with self.timer.time():
            return await self.inner.complete(messages, params, model)

    def stream(
        self, messages: ChatMessages, params: GenerationParams, model: str
    ) -> AsyncIterator[StreamItem]:
        return self.inner.stream(messages, params, model)  # not benchmarked

    def count_tokens(self, role: str, content: str, model: str) -> int:
        return self.inner.count_tokens(role, content, model)

    def context_window(self, model: str) -> int:
        return self.inner.context_window(model)

    async def aclose(self) -> None:
        await self.inner.aclose()


class InstantBackend:
    """A model that answers at once, so a turn's remaining time is storage, cache and context.

    A benchmark harness, not a test double: it lets the per-turn cost of everything *but*
    the model be read directly, without an HTTP round trip's noise on top. The context
    window is large so every turn sends the whole history (the worst case for us).
    """

    name = "instant"
    default_model = MODEL

    def __init__(self, timer: ModelTimer, window: int = 1_000_000) -> None:
        self.timer, self.window = timer, window

    async def complete(
        self, messages: ChatMessages, params: GenerationParams, model: str
    ) -> Completion:
        with self.timer.time():
            text = f"Reply {len(messages)}: your parcel is on its way."
            return Completion(text, Usage(len(messages), 8), model, "stop")

    async def stream(
        self, messages: ChatMessages, params: GenerationParams, model: str
    ) -> AsyncIterator[StreamItem]:
        completion = await self.complete(messages, params, model)
        yield completion.text
        yield completion

    def count_tokens(self, role: str, content: str, model: str) -> int:
        return math.ceil(len(content) / 3) + 4

    def context_window(self, model: str) -> int:
        return self.window

    async def aclose(self) -> None:
        return None


@contextlib.contextmanager
def fake_model_process() -> Iterator[str]:
    """Run ``python -m chatsessions.testing --port 0`` (zero delay); yield its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatsessions.testing", "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the fake model did not start (printed {url!r})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL.replace("postgresql://", "postgres://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database (``postgresql://`` URL), dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_version() -> str:
    conn = await asyncpg.connect(PG_URL.replace("postgresql://", "postgres://", 1))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def machine_info() -> dict[str, Any]:
    """Enough to tell whether two result files are comparable at all."""
    packages = {}
    for name in ("chatsessions", "openai", "sqlalchemy", "aiosqlite", "asyncpg", "psycopg",
                 "langchain-core", "langchain-community", "langgraph",
                 "langgraph-checkpoint-sqlite", "langgraph-checkpoint-postgres"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": asyncio.run(_pg_version()),
        "packages": packages,
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


@dataclass(frozen=True)
class Ratio:
    """One reported figure: ``value`` compared with ``target`` (None: reported only)."""

    name: str
    value: float
    target: float | None = None
    better: str = "lower"  # "lower": value <= target passes; "higher": value >= target
    how: str = ""
    unit: str = "×"  # what the value and target are in: a ratio, or "ms"

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.better == "lower" else self.value >= self.target

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "target": self.target,
                "better": self.better, "passed": self.passed, "how": self.how,
                "unit": self.unit}
