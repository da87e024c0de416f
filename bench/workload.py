"""One workload, run by several sides in lockstep.

Every side creates its chats, then does turn k of every chat before turn k+1. The sides
take their steps alternately (the first to go rotates), so a burst of load from anything
else on a shared machine lands on all of them alike instead of on whichever ran at the
time: that is what makes a ratio taken on a noisy 2-core box meaningful.

Every side sends the same system prompt and user texts to the same fake model, whose
answers depend on the whole history; each run keeps a digest of its answers and the
benchmarks check the digests agree, i.e. that every side really did the same work.
Opening (connecting, migrating, one warm-up turn) is left out of the timings.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.harness import ModelTimer, median, user_text

T = TypeVar("T")


@dataclass
class Run:
    """One side's timings for one pass of the workload."""

    wall_s: float = 0.0
    model_s: float = 0.0
    calls: int = 0
    answers_sha: str = ""
    #: non-model seconds of each turn: ``per_turn[k][c]`` is turn k+1 of chat c
    per_turn: list[list[float]] = field(default_factory=list)

    @property
    def nonmodel_s(self) -> float:
        return self.wall_s - self.model_s

    def per_turn_medians(self) -> list[float]:
        return [median(row) for row in self.per_turn]

    def summary(self) -> dict[str, Any]:
        return {"wall_s": self.wall_s, "model_s": self.model_s, "nonmodel_s": self.nonmodel_s,
                "model_calls": self.calls, "answers_sha": self.answers_sha,
                "per_turn_nonmodel_s": micro(self.per_turn)}


def micro(rows: list[list[float]]) -> list[list[float]]:
    """Raw samples rounded to the microsecond: all the information, a third of the bytes."""
    return [[round(x, 6) for x in row] for row in rows]


class Side:
    """A way of running turns. ``new_chat`` and ``send`` also return their own duration,
    measured as close to the work as the side allows (inside the coroutine for async
    sides, so driving their event loop from here is not counted)."""

    name = "side"

    def __init__(self) -> None:
        self.timer = ModelTimer()

    def open(self) -> None:
        """Connect and do one warm-up turn."""

    def new_chat(self) -> tuple[str, float]:
        raise NotImplementedError

    def send(self, chat_id: str, text: str) -> tuple[str, float]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the side is not used again."""


class AsyncSide(Side):
    """A side whose API is async, driven on a private loop in the calling thread."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def timed(self, coro: Coroutine[Any, Any, T]) -> tuple[T, float]:
        started = time.perf_counter()
        result = await coro
        return result, time.perf_counter() - started

    def close(self) -> None:
        self.loop.close()


def timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def order(chats: int, turns: int) -> Iterator[tuple[int, int]]:
    """(turn, chat) pairs, interleaved: every chat's turn k before anyone's turn k+1."""
    for turn in range(turns):
        for chat in range(chats):
            yield turn, chat


def _rotated(sides: Sequence[Side], step: int) -> list[Side]:
    shift = step % len(sides)
    return [*sides[shift:], *sides[:shift]]


def _one_pass(sides: Sequence[Side], chats: int, turns: int) -> dict[str, Run]:
    runs = {s.name: Run(per_turn=[[0.0] * chats for _ in range(turns)]) for s in sides}
    digests = {s.name: hashlib.sha256() for s in sides}
    ids: dict[str, list[str]] = {s.name: [] for s in sides}
    for side in sides:
        side.timer.reset()
    for chat in range(chats):
        for side in _rotated(sides, chat):
            chat_id, seconds = side.new_chat()
            ids[side.name].append(chat_id)
            runs[side.name].wall_s += seconds
    for step, (turn, chat) in enumerate(order(chats, turns)):
        for side in _rotated(sides, step):
            answer, seconds = side.send(ids[side.name][chat], user_text(chat, turn))
            run = runs[side.name]
            run.wall_s += seconds
            run.per_turn[turn][chat] = seconds - side.timer.last
            digests[side.name].update(answer.encode() + b"\0")
    for side in sides:
        run = runs[side.name]
        run.model_s, run.calls = side.timer.seconds, side.timer.calls
        run.answers_sha = digests[side.name].hexdigest()[:16]
    return runs


def lockstep(
    factories: dict[str, Callable[[], Side]], chats: int, turns: int, passes: int
) -> dict[str, list[Run]]:
    """``passes`` passes of the workload, each on freshly opened sides, steps alternating."""
    results: dict[str, list[Run]] = {name: [] for name in factories}
    for _ in range(passes):
        sides: list[Side] = []
        try:
            for name, factory in factories.items():
                side = factory()
                side.name = name
                sides.append(side)
                side.open()
            for name, run in _one_pass(sides, chats, turns).items():
                results[name].append(run)
        finally:
            for side in sides:
                side.close()
    return results


def summarize(runs: list[Run]) -> dict[str, Any]:
    """The median pass's figures, the per-turn medians, and every pass's raw numbers."""
    per_turn = [median(v) for v in zip(*(r.per_turn_medians() for r in runs), strict=True)]
    return {
        "wall_s": median([r.wall_s for r in runs]),
        "model_s": median([r.model_s for r in runs]),
        "nonmodel_s": median([r.nonmodel_s for r in runs]),
        "model_calls": runs[0].calls,
        "answers_sha": sorted({r.answers_sha for r in runs}),
        "per_turn_nonmodel_median_s": per_turn,
        "passes": [r.summary() for r in runs],
    }


def same_answers(results: dict[str, dict[str, Any]]) -> bool:
    return len({sha for r in results.values() for sha in r["answers_sha"]}) == 1
