"""Turn a results dict into ``benchmarks.md`` and ``benchmarks.png``.

The Markdown is regenerated on every run so the committed page can never disagree with
the committed ``latest.json``; only the explanations below are written by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from bench.harness import median

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt

HOW = {
    "overhead": """\
The tutorial's baseline keeps `chat_id -> list of messages` in a dict and calls the
official `openai.OpenAI` client; ours sends the same turns through `ChatSessions`
(`backend="openai"`, a SQLite file). Both talk to the same fake model and must produce
identical answers (checked by digest). The ratio is total wall time, chat creation and
model calls included. All sides run in lockstep (one step each in turn, the first to go
rotating), several passes on freshly opened sides, and the median pass counts.
PostgreSQL and `AsyncChatSessions` (against a dict + `openai.AsyncOpenAI` baseline) are
reported without a target.""",
    "flat": """\
`AsyncChatSessions` with an in-process backend that answers instantly, so a turn's wall
time minus the (microseconds) inside the backend is its storage, cache, lock and
context-building work. Long chats first run turns 1–189 (plotted); then their turns
190–200 alternate step by step with turns 1–10 of as many fresh chats in the same
database, so both windows are measured side by side in time. The figure is the median of
turns 190–200 over the median of turns 1–10. The context window is large enough that
every turn sends the whole history, the worst case for us. A proxy around the store
records the part spent inside store calls. LangChain (below) runs the same schedule with
an instant `RunnableLambda` as its model, reported without a target; its "store" part is
the time inside `SQLChatMessageHistory.messages` and `add_messages`.""",
    "peer": """\
LangChain's `RunnableWithMessageHistory` over `SQLChatMessageHistory` (langchain-community),
same workload, same fake model, same database kind. The model step is the same `openai`
client call wrapped in a `RunnableLambda` (not `ChatOpenAI`): the comparison is about the
history layer, and both sides time exactly that client call with the same timer.
LangChain gets a generous setup: one engine shared by every chat, one history object per
chat built once, and on SQLite the same pragmas as ours (WAL, `synchronous=NORMAL`). The
figure is LangChain's non-model time (wall minus model calls) over ours; the four sides
run in lockstep.""",
}

def choices(data: dict[str, Any]) -> str:
    """The decisions behind the numbers, with the measurement that backs the first one."""
    placed = data["fake_model"]["placement"]
    measured = (f"in-process {placed['in_process_wall_s']:.3f} s against "
                f"{placed['separate_process_wall_s']:.3f} s in a separate process "
                f"({placed['in_process_over_separate']:.2f}×)")
    return f"""\
* **The fake model runs in a separate process** (`python -m chatsessions.testing --port 0`),
  with zero delay. In-process, uvicorn runs on a thread of the benchmark's own interpreter
  and competes for the GIL with the code being measured; in its own process it has the
  other core. Measured in this run on the plain baseline, in lockstep: {measured}. The
  difference is small, but the separate process keeps the fake's CPU off the measured side.
* **Ratios, not absolute times**: every figure divides two numbers taken in the same run
  on the same machine, with the sides in lockstep (one step each in turn), so load from
  anything else on the machine lands on every side alike.
* **Model time** is measured on the client side around the model call on every side, so
  it includes the `openai` client's own request building (which grows with the history);
  non-model time is wall time minus that."""


def _verdict(ratio: dict[str, Any]) -> str:
    if ratio["passed"] is None:
        return "reported"
    return "**pass**" if ratio["passed"] else "**FAIL**"


def _target(ratio: dict[str, Any]) -> str:
    if ratio["target"] is None:
        return "–"
    return ("≤ " if ratio["better"] == "lower" else "≥ ") + f"{ratio['target']:g}×"


def _sides_table(results: dict[str, Any]) -> list[str]:
    lines = ["| side | wall (s) | in model (s) | non-model (s) | model calls | non-model per "
             "turn, first → last turns (ms) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        per_turn = r["per_turn_nonmodel_median_s"]
        edge = max(1, len(per_turn) // 4)
        first, last = median(per_turn[:edge]) * 1e3, median(per_turn[-edge:]) * 1e3
        lines.append(f"| {name} | {r['wall_s']:.3f} | {r['model_s']:.3f} | "
                     f"{r['nonmodel_s']:.3f} | {r['model_calls']} | {first:.2f} → {last:.2f} |")
    return lines


def _flat_table(results: dict[str, Any]) -> list[str]:
    lines = ["| side | turns 1–10 (ms) | late turns (ms) | in store calls, early → late "
             "(ms) | share in store |", "| --- | ---: | ---: | ---: | ---: |"]
    for label, r in results.items():
        share = r["late_store_median_s"] / r["late_median_s"]
        lines.append(
            f"| {label} | {r['early_median_s'] * 1e3:.3f} | {r['late_median_s'] * 1e3:.3f} "
            f"(turns {r['late_turns'][0]}–{r['late_turns'][1]}) | "
            f"{r['early_store_median_s'] * 1e3:.3f} → {r['late_store_median_s'] * 1e3:.3f} | "
            f"{share:.0%} |")
    return lines


def markdown(data: dict[str, Any], png_name: str) -> str:
    machine = data["machine"]
    out = [
        "# Benchmarks", "",
        f"Written by `python -m bench{' --quick' if data['mode'] == 'quick' else ''}` "
        f"(`make bench`) on {data['started_at'][:10]}; do not edit by hand. Raw numbers: "
        "`bench/results/latest.json`.", "",
        f"Machine: {machine['cpu_count']} CPUs, Python {machine['python']}, SQLite "
        f"{machine['sqlite']}, PostgreSQL {machine['postgresql']}; mode `{data['mode']}`, "
        f"{data['duration_s']:.0f} s in all.", "",
        "| figure | measured | target | result | what is divided |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for bench in data["benchmarks"].values():
        for ratio in bench["ratios"]:
            out.append(f"| `{ratio['name']}` | {ratio['value']:.2f}× | {_target(ratio)} | "
                       f"{_verdict(ratio)} | {ratio['how']} |")
    out += ["", f"![per-turn non-model time against turn index]({png_name})", ""]
    for key, bench in data["benchmarks"].items():
        sizes = ", ".join(f"{k} {v}" for k, v in bench["sizes"].items())
        out += [f"## {bench['title']}", "", HOW[key], "", f"Sizes: {sizes}.", ""]
        if "same_answers_on_every_side" in bench:
            same = "yes" if bench["same_answers_on_every_side"] else "**NO**"
            out += [f"Identical answers on every side: {same}.", ""]
        table = _flat_table if key == "flat" else _sides_table
        out += [*table(bench["results"]), ""]
    out += ["## Choices", "", choices(data), ""]
    return "\n".join(out)


SMOOTH = 9  # turns per rolling median in the plot: load spikes elsewhere hide the trend


def _rolling_median(values: list[float], width: int) -> list[float]:
    half = width // 2
    return [median(values[max(0, i - half):i + half + 1]) for i in range(len(values))]


def plot(data: dict[str, Any], path: Path) -> None:
    """Left: our per-turn cost over a long chat; right: ours against LangChain's."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, r in data["benchmarks"]["flat"]["results"].items():
        values = _rolling_median([x * 1e3 for x in r["per_turn_median_s"]], SMOOTH)
        left.plot(range(1, len(values) + 1), values, label=name,
                  linestyle="-" if name.startswith("ours") else ":")
    left.set(title="Instant model: non-model time per turn", xlabel="turn of the chat",
             ylabel=f"ms per turn (median over chats and {SMOOTH} turns)", ylim=(0, None))
    left.legend()
    peer = data["benchmarks"]["peer"]["results"]
    for name, r in peer.items():
        values = r["per_turn_nonmodel_median_s"]
        right.plot(range(1, len(values) + 1), [x * 1e3 for x in values], marker=".",
                   linestyle="-" if name.startswith("ours") else ":", label=name)
    right.set(title="Non-model time per turn vs LangChain", xlabel="turn of each chat",
              ylabel="ms per turn (median over chats)", ylim=(0, None))
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
