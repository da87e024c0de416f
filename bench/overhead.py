"""Target 1: what the library costs over the tutorial's in-memory baseline.

The baseline keeps ``chat_id -> list of messages`` in a dict and calls the official
``openai.OpenAI`` client; ours runs the same turns through ``ChatSessions`` (durable
storage, cache, locks, context trimming) against the same fake model. The ratio is
total wall time, model calls included, so it reads as "how much slower does my app get".
All sides run in lockstep; the median of ``passes`` passes is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

from bench.harness import Ratio
from bench.sides import BaselineAsync, BaselineSync, OursAsync, OursSync
from bench.workload import Side, lockstep, same_answers, summarize


def run(base_url: str, pg_url: str, workdir: Path, chats: int, turns: int, passes: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    files = count()

    def sqlite_url() -> str:  # a fresh file per pass: no pass inherits another's data
        return f"sqlite:///{workdir / f'overhead-{next(files)}.db'}"

    factories: dict[str, Callable[[], Side]] = {
        "baseline_sync": lambda: BaselineSync(base_url),
        "ours_sqlite_sync": lambda: OursSync(base_url, sqlite_url()),
        "ours_postgresql_sync": lambda: OursSync(base_url, pg_url),
        "baseline_async": lambda: BaselineAsync(base_url),
        "ours_sqlite_async": lambda: OursAsync(base_url, sqlite_url()),
    }
    log(f"library overhead: {chats} chats x {turns} turns, {passes} passes of "
        f"{len(factories)} sides in lockstep")
    results = {name: summarize(runs)
               for name, runs in lockstep(factories, chats, turns, passes).items()}

    def wall(name: str) -> float:
        return float(results[name]["wall_s"])

    ratios = [
        Ratio("overhead_sqlite_sync", wall("ours_sqlite_sync") / wall("baseline_sync"), 1.5,
              "lower", "wall time, ChatSessions on SQLite / dict + openai.OpenAI"),
        Ratio("overhead_postgresql_sync",
              wall("ours_postgresql_sync") / wall("baseline_sync"), None, "lower",
              "wall time, ChatSessions on PostgreSQL / dict + openai.OpenAI"),
        Ratio("overhead_sqlite_async", wall("ours_sqlite_async") / wall("baseline_async"),
              None, "lower", "wall time, AsyncChatSessions on SQLite / dict + AsyncOpenAI"),
    ]
    return {
        "title": "Library overhead",
        "sizes": {"chats": chats, "turns": turns, "passes": passes},
        "same_answers_on_every_side": same_answers(results),
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }
