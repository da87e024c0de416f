"""Why the fake model runs in its own process: measure both placements, keep the evidence.

The plain baseline runs in lockstep against a FakeLLMServer on a thread of this
interpreter and against one in a separate process; the figures go into the results so
the choice stays checkable on whatever machine runs the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.sides import BaselineSync
from bench.workload import Side, lockstep, summarize
from chatsessions.testing import FakeLLMServer


def run(subprocess_url: str, chats: int, turns: int, passes: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    log(f"fake model placement: {chats} chats x {turns} turns, {passes} passes")
    with FakeLLMServer() as fake:
        factories: dict[str, Callable[[], Side]] = {
            "in_process": lambda: BaselineSync(fake.base_url),
            "separate_process": lambda: BaselineSync(subprocess_url),
        }
        results = {name: summarize(runs)
                   for name, runs in lockstep(factories, chats, turns, passes).items()}
    inproc, separate = results["in_process"]["wall_s"], results["separate_process"]["wall_s"]
    return {
        "workload": "baseline_sync (dict + openai.OpenAI), both placements in lockstep",
        "sizes": {"chats": chats, "turns": turns, "passes": passes},
        "in_process_wall_s": inproc,
        "separate_process_wall_s": separate,
        "in_process_over_separate": inproc / separate,
        "chosen": "separate process",
    }
