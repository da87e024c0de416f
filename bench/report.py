"""Turn a results dict into ``benchmarks.md`` and ``benchmarks.png``.

The Markdown is regenerated on every run so the committed page can never disagree with
the committed ``latest.json``; only the explanations below are written by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from bench import latency, lookups, routing, tools
from bench.harness import median

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter

HOW = {
    "latency": latency.__doc__ or "",
    "lookups": lookups.__doc__ or "",
    "routing": routing.__doc__ or "",
    "tools": tools.__doc__ or "",
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
    "graph": """\
LangGraph, which LangChain's docs now recommend for chat persistence: the smallest chat
graph (`START -> model -> END` over `MessagesState`) compiled with `SqliteSaver`
(langgraph-checkpoint-sqlite) or `PostgresSaver` (langgraph-checkpoint-postgres), the
thread id being the chat id, one `invoke` per turn with the new user message, in each of
its durability modes: `sync`, `async`, `exit`. Every side, ours included, answers with an
instant model, so a turn's time is the history layer's work; each side has a fresh
database of its own (SQLite: the same WAL and `synchronous=NORMAL` pragmas) and they take
their turns in lockstep. The time figure is LangGraph's fastest mode over ours at the
last ten turns; storage is what the database grew by over the run, per chat (SQLite pages
after a WAL checkpoint, `pg_database_size` on PostgreSQL), LangGraph's smallest mode over
ours. LangGraph checkpoints the whole message list at every step it persists, so both
grow with the chat's length.""",
    "peer": """\
LangChain's `RunnableWithMessageHistory` over `SQLChatMessageHistory` (langchain-community),
same workload, same fake model, same database kind. The model step is the same `openai`
client call wrapped in a `RunnableLambda` (not `ChatOpenAI`): the comparison is about the
history layer, and both sides time exactly that client call with the same timer.
LangChain gets a generous setup: one engine shared by every chat, one history object per
chat built once, and on SQLite the same pragmas as ours (WAL, `synchronous=NORMAL`). The
figure is LangChain's non-model time (wall minus model calls) over ours; the four sides
run in lockstep.""",
    "service": """\
Turns per second over HTTP with concurrent clients (64 in the full run), each owning a
chat and sending its turns one after another on a keep-alive connection. The clients run
in 4 worker processes, each with one `AsyncClient` of httpx2 per server: httpx2 is the
fork of httpx that the `openai` client inside chatsessions is built on; httpx itself is
used nowhere, its connection pool slows down sharply with many concurrent requests
(encode/httpx#3215), and a single client process saturated its core before the bare proxy
did. Four uvicorn subprocesses run side by side: `chatsessions serve` on a SQLite file,
the same on PostgreSQL, and a bare FastAPI endpoint (`bench/proxy_app.py`, run by uvicorn
with `serve`'s arguments) that appends the message to a dict and forwards the history to
the model with httpx2 and the openai client's default pool (the baseline of the target:
the same HTTP stack as chatsessions) or, reported only, with aiohttp, which spends less
CPU per request. All call the same zero-delay fake model, a fifth process, and must
produce identical answers. The servers take rounds in lockstep (every chat's next turns
on one server, then the next server, the first to go rotating). A server's rate is its
turns over the sum of its rounds' wall times. The CPU seconds of every process are read
from `/proc/PID/stat` around each round: on 2 cores the clients, server and model share
the CPU, so the clients' own cost is counted on both sides and narrows the rate ratio;
the server CPU per turn is the figure that does not depend on the clients; its target is
against the proxy calling the model with aiohttp, the cheapest way to call it.""",
    "scale": """\
For each N, a fresh `chatsessions serve` process (SQLite, open-file limit raised to the
hard limit in a `preexec_fn`) gets N chats, created first, 64 at a time; then one turn on
each is sent at once, every request on its own connection (httpx2 clients of 100
connections each), against the fake model with a 1 s delay. Wall time runs from the
first request sent to the last answer received; the figure divides it by the model's
1 s. The service runs with its default settings (the model client retries). Memory is the
service's `VmRSS` after one warm-up turn, after creating the chats (idle: rows in the
database, nothing cached) and after one turn on each (cached: the history is in the
service's cache). A burst leaves the buffers of N connections in the allocator, so the
per-chat figures come from a separate run whose turns go 64 at a time to a zero-delay
model; the RSS after each burst is listed as well. The same burst, at the largest N,
also goes to the service benchmark's bare FastAPI proxies (nothing stored): what this
client, the model and a minimal server cost on the same 2 cores; the target is against
the one calling the model with aiohttp.""",
    "embedded": """\
`AsyncChatSessions(backend="local")` (SmolLM2-135M via llama.cpp, 2 threads) on a SQLite
file, twice: with the per-chat state cache (the default) and with
`local_chat_states=0`, in lockstep (one turn each, the first to go rotating). The
chats are interleaved (turn k of every chat before anyone's turn k+1), answers greedy
(temperature 0) and at most 16 tokens. Each turn is streamed; time to first token runs
from calling `stream` to the first text delta, so storing the user's message and building
the context are included. The figure is the median over chats and passes at the last
turn over the same at turn 1. Each chat's messages open with a greeting of its own, so a
first turn cannot reuse a near-identical message that the previous chat left in the
context. Two counters are read on the model: the prompt tokens llama.cpp evaluated before
the first token, and the time spent saving and restoring chat states.""",
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
    unit = _unit(ratio)
    return ("≤ " if ratio["better"] == "lower" else "≥ ") + f"{ratio['target']:g}{unit}"


def _unit(ratio: dict[str, Any]) -> str:
    unit = str(ratio.get("unit", "×"))
    return unit if unit == "×" else f" {unit}"


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


def _graph_table(results: dict[str, Any]) -> list[str]:
    lines = ["| side | turns 1–10 (ms) | last 10 turns (ms) | database bytes per chat |",
             "| --- | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['early_median_s'] * 1e3:.2f} | "
                     f"{r['late_median_s'] * 1e3:.2f} | {r['bytes_per_chat']:,.0f} |")
    return lines


def _service_table(results: dict[str, Any]) -> list[str]:
    lines = ["| server | turns | failed | turns/s | latency median / p99 (ms) | CPU per turn: "
             "server / model / client (ms) | CPU busy |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['turns']} | {r['failures']} | {r['turns_per_s']:.0f} | "
            f"{r['latency_median_ms']:.0f} / {r['latency_p99_ms']:.0f} | "
            f"{r['server_cpu_ms_per_turn']:.2f} / {r['model_cpu_ms_per_turn']:.2f} / "
            f"{r['client_cpu_ms_per_turn']:.2f} | {r['cpu_busy_share']:.0%} |")
    return lines


def _mb(value: float) -> str:
    return f"{value / 2**20:.0f}"


def _scale_table(bench: dict[str, Any]) -> list[str]:
    lines = ["| turns in flight | succeeded | wall (s) | latency min / median / max (s) | "
             "server CPU per turn (ms) | client CPU (s) | RSS before → idle chats → after "
             "burst (MiB) |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for step in bench["steps"]:
        lat, rss = step["latency_s"], step["rss_bytes"]
        lines.append(
            f"| {step['chats']} | {step['succeeded']} | {step['wall_s']:.2f} | "
            f"{lat['min']:.2f} / {lat['median']:.2f} / {lat['max']:.2f} | "
            f"{step['server_cpu_ms_per_turn']:.2f} | {step['cpu_s']['client']:.1f} | "
            f"{_mb(rss['before'])} → {_mb(rss['idle_chats'])} → {_mb(rss['after_burst'])} |")
    floor = bench.get("bare_proxy")
    if floor:
        for client in ("httpx", "aiohttp"):
            step = floor[client]
            lat = step["latency_s"]
            lines.append(
                f"| {floor['chats']}, bare proxy ({client}) | {step['succeeded']} | "
                f"{step['wall_s']:.2f} | {lat['min']:.2f} / {lat['median']:.2f} / "
                f"{lat['max']:.2f} | {step['server_cpu_ms_per_turn']:.2f} | "
                f"{step['cpu_s']['client']:.1f} | – |")
    errors = {k: v for step in bench["steps"] for k, v in step.get("errors", {}).items()}
    memory = bench["memory"]
    rss = memory["rss_bytes"]
    lines += [
        "",
        f"Largest N whose turns all succeeded within {bench['target_wall_s']:g} s: "
        f"**{bench['largest_n_within_target'] or 'none'}**. "
        + (f"Errors: {', '.join(f'{v} × {k}' for k, v in errors.items())}."
           if errors else "No errors."),
        "",
        f"Memory, {memory['chats']} chats: **{memory['idle_bytes_per_chat'] / 1024:.1f} KiB "
        f"per idle chat**, **{memory['cached_bytes_per_chat'] / 1024:.1f} KiB per cached "
        f"chat** (RSS {_mb(rss['before'])} → {_mb(rss['idle_chats'])} → "
        f"{_mb(rss['cached_chats'])} MiB). The burst of {bench['steps'][-1]['chats']} turns "
        f"left the service {bench['steps'][-1]['after_burst_bytes_per_chat'] / 1024:.0f} KiB "
        "larger per turn that was in flight.",
    ]
    return lines


def _embedded_table(results: dict[str, Any]) -> list[str]:
    lines = ["| side | time to first token, turn 1 → last (ms) | ratio | prompt tokens "
             "evaluated, turn 1 → last | state save + restore, turn 1 → last (ms) | "
             "tokens/s: whole turn / after the first | state cache hits |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        tokens = r["prompt_tokens_evaluated_per_turn_median"]
        switch = r["state_switch_per_turn_median_s"]
        cache = r["state_cache"]
        hits = (f"{cache['hit_rate']:.0%} ({cache['hits']}/{cache['hits'] + cache['misses']})"
                if cache["enabled"] and cache["hit_rate"] is not None else "off")
        lines.append(
            f"| {name} | {r['ttft_first_turn_s'] * 1e3:.0f} → {r['ttft_last_turn_s'] * 1e3:.0f} "
            f"| {r['ttft_ratio']:.2f}× | {tokens[0]:.0f} → {tokens[-1]:.0f} | "
            f"{switch[0] * 1e3:.1f} → {switch[-1] * 1e3:.1f} | {r['tokens_per_s']:.1f} / "
            f"{r['decode_tokens_per_s']:.1f} | {hits} |")
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
        f"{data['duration_s']:.0f} s in all. Automatic titles are off on our side everywhere: "
        "no baseline or peer makes that extra model call.", "",
        "| figure | measured | target | result | what is divided |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for bench in data["benchmarks"].values():
        for ratio in bench["ratios"]:
            out.append(f"| `{ratio['name']}` | {ratio['value']:.2f}{_unit(ratio)} | "
                       f"{_target(ratio)} | "
                       f"{_verdict(ratio)} | {ratio['how']} |")
    out += ["", f"![per-turn non-model time against turn index]({png_name})", ""]
    for key, bench in data["benchmarks"].items():
        sizes = ", ".join(f"{k} {v}" for k, v in bench["sizes"].items())
        out += [f"## {bench['title']}", "", HOW[key], "", f"Sizes: {sizes}.", ""]
        if "same_answers_on_every_side" in bench:
            same = "yes" if bench["same_answers_on_every_side"] else "**NO**"
            out += [f"Identical answers on every side: {same}.", ""]
        if "identical_answers_cache_on_and_off" in bench:
            same = "yes" if bench["identical_answers_cache_on_and_off"] else "no"
            differing = bench.get("answers_differing_cache_on_and_off")
            if differing:
                sizes_ = bench["sizes"]
                total = sizes_["chats"] * sizes_["turns"] * sizes_["passes"]
                same += f" ({differing} of {total} answers differ)"
            out += [f"Identical answers with the state cache on and off: {same}.", ""]
        if key == "scale":
            out += [*_scale_table(bench), ""]
            continue
        table = {"flat": _flat_table, "graph": _graph_table, "service": _service_table,
                 "embedded": _embedded_table, "lookups": lookups.table,
                 "latency": latency.table, "routing": routing.table,
                 "tools": tools.table}.get(key, _sides_table)
        out += [*table(bench["results"]), ""]
    out += ["## Choices", "", choices(data), ""]
    return "\n".join(out)


SMOOTH = 9  # turns per rolling median in the plot: load spikes elsewhere hide the trend


def _rolling_median(values: list[float], width: int) -> list[float]:
    half = width // 2
    return [median(values[max(0, i - half):i + half + 1]) for i in range(len(values))]


def plot(data: dict[str, Any], path: Path) -> None:
    """Top: our per-turn cost over a long chat, and against LangChain's. Bottom: the
    service against the bare proxy, turns in flight against wall time, and time to first
    token on the embedded model per turn."""
    benches = data["benchmarks"]
    fig = plt.figure(figsize=(15, 9))
    grid = fig.add_gridspec(2, 6)
    left, right = fig.add_subplot(grid[0, :3]), fig.add_subplot(grid[0, 3:])
    for name, r in benches["flat"]["results"].items():
        values = _rolling_median([x * 1e3 for x in r["per_turn_median_s"]], SMOOTH)
        left.plot(range(1, len(values) + 1), values, label=name,
                  linestyle="-" if name.startswith("ours") else ":")
    left.set(title="Instant model: non-model time per turn", xlabel="turn of the chat",
             ylabel=f"ms per turn (median over chats and {SMOOTH} turns)", ylim=(0, None))
    left.legend()
    peer = benches["peer"]["results"]
    for name, r in peer.items():
        values = r["per_turn_nonmodel_median_s"]
        right.plot(range(1, len(values) + 1), [x * 1e3 for x in values], marker=".",
                   linestyle="-" if name.startswith("ours") else ":", label=name)
    right.set(title="Non-model time per turn vs LangChain", xlabel="turn of each chat",
              ylabel="ms per turn (median over chats)", ylim=(0, None))
    right.legend()
    if "service" in benches:
        _plot_service(fig.add_subplot(grid[1, :2]), benches["service"])
    if "scale" in benches:
        _plot_scale(fig.add_subplot(grid[1, 2:4]), benches["scale"])
    if "embedded" in benches:
        _plot_embedded(fig.add_subplot(grid[1, 4:]), benches["embedded"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_service(ax: Any, bench: dict[str, Any]) -> None:
    names = list(bench["results"])
    rates = [bench["results"][n]["turns_per_s"] for n in names]
    server = [bench["results"][n]["server_cpu_ms_per_turn"] for n in names]
    bars = ax.bar(range(len(names)), rates, color=["C0", "C1", "C7", "C2"][:len(names)])
    for bar, ms in zip(bars, server, strict=True):
        ax.annotate(f"server {ms:.1f} ms/turn", (bar.get_x() + bar.get_width() / 2,
                                                bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set(title=f"HTTP, {bench['sizes']['clients']} clients: turns per second",
           ylabel="turns/s")


def _plot_scale(ax: Any, bench: dict[str, Any]) -> None:
    counts = [s["chats"] for s in bench["steps"]]
    ax.plot(counts, [s["wall_s"] for s in bench["steps"]], marker="o", label="wall time")
    ax.axhline(bench["target_wall_s"], color="C3", linestyle=":", label="target")
    ax.axhline(bench["sizes"]["model_delay_s"], color="C7", linestyle="--",
               label="model latency")
    ax.set(title=f"Turns in flight, {bench['sizes']['model_delay_s']:g} s model",
           xlabel="turns in flight at once", ylabel="s until the last answer (log)",
           xscale="log", yscale="log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.legend()


def _plot_embedded(ax: Any, bench: dict[str, Any]) -> None:
    for name, r in bench["results"].items():
        values = [x * 1e3 for x in r["ttft_per_turn_median_s"]]
        ax.plot(range(1, len(values) + 1), values, marker=".", label=name,
                linestyle="-" if name.endswith("_on") else ":")
    ax.set(title="Local model: time to first token", xlabel="turn of each chat",
           ylabel="ms (median over chats and passes)", ylim=(0, None))
    ax.legend()
