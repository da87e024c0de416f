"""Target 3: against LangChain's RunnableWithMessageHistory + SQLChatMessageHistory.

Same workload (turn k of every chat before turn k+1), same fake model, same database kind
(a fresh SQLite file per side and pass; one PostgreSQL database, LangChain's table fresh
each pass), all four sides in lockstep, the median of several passes.
Compared on *non-model* time: wall time minus the time inside the model call, which both
sides measure with the same timer around the same ``openai`` client call. The figure is
LangChain's non-model time over ours, so 5 means we spend a fifth of LangChain's time
outside the model.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

from bench.harness import Ratio
from bench.langchain_side import LangChainSide
from bench.sides import OursSync
from bench.workload import Side, lockstep, same_answers, summarize

#: LangChain's non-model time over ours. On PostgreSQL every answer is committed
#: synchronously (the durability promise), which bounds the gap: 3x there, 5x on SQLite.
TARGETS = {"sqlite": 5.0, "postgresql": 3.0}


def run(base_url: str, databases: dict[str, str], workdir: Path, chats: int, turns: int,
        passes: int, log: Callable[[str], None]) -> dict[str, Any]:
    files = count()

    def url(label: str) -> str:
        if label != "sqlite":
            return databases[label]
        return f"sqlite:///{workdir / f'peer-{next(files)}.db'}"

    tables = count()

    def langchain(label: str) -> Callable[[], Side]:
        # A table of its own each pass: LangChain's has no index on the chat id, so rows
        # of an earlier pass in the same PostgreSQL database would slow its reads.
        return lambda: LangChainSide(base_url, url(label), f"message_store_{next(tables)}")

    factories: dict[str, Callable[[], Side]] = {}
    for label in databases:
        factories[f"ours_{label}"] = lambda label=label: OursSync(base_url, url(label))
        factories[f"langchain_{label}"] = langchain(label)
    log(f"against LangChain: {chats} chats x {turns} turns, {passes} passes of "
        f"{len(factories)} sides in lockstep")
    results = {name: summarize(runs)
               for name, runs in lockstep(factories, chats, turns, passes).items()}

    ratios = []
    for label in databases:
        ours, theirs = results[f"ours_{label}"], results[f"langchain_{label}"]
        ratios.append(Ratio(
            f"peer_{label}_nonmodel", theirs["nonmodel_s"] / ours["nonmodel_s"],
            TARGETS[label], "higher",
            f"non-model time, LangChain / ChatSessions, {label}"))
        ratios.append(Ratio(
            f"peer_{label}_wall", theirs["wall_s"] / ours["wall_s"], None, "higher",
            f"wall time, LangChain / ChatSessions, {label}"))
    return {
        "title": "Against LangChain",
        "sizes": {"chats": chats, "turns": turns, "passes": passes},
        "same_answers_on_every_side": same_answers(results),
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }
