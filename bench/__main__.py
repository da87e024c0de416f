"""``python -m bench [--quick] [--output DIR]``: run every benchmark, write JSON and docs.

Without ``--output`` the results go to ``bench/results/`` (a timestamped file, ignored by
git, and ``latest.json``, committed) and the page to ``docs/benchmarks.md`` + ``.png``.
With ``--output DIR`` everything goes to DIR, so a test can run the benchmarks without
touching the committed results.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    embedded,
    flat,
    graph,
    latency,
    lookups,
    overhead,
    peer,
    placement,
    report,
    routing,
    scale,
    service,
    tools,
)
from bench.harness import fake_model_process, machine_info, pg_database

ROOT = Path(__file__).resolve().parent.parent
_NUMBERS = re.compile(r"\[\s*((?:-?[\d.e+-]+,?\s*)+)\]")

#: (chats, turns[, passes]) per benchmark and mode; service: (clients, rounds, turns per
#: round); scale: the ladder of turns in flight; scale_memory: (chats,); lookups: (chats,
#: messages per chat, turns); routing: (chats, turns, turns in flight, passes); tools:
#: (pairs of chats, rounds); latency: (samples,)
SIZES: dict[str, dict[str, tuple[int, ...]]] = {
    "full": {"placement": (10, 10, 3), "overhead": (20, 10, 3), "flat": (8, 200),
             "peer": (100, 20, 3), "service": (64, 8, 4),
             "scale": (200, 300, 500, 1000, 10_000), "scale_memory": (2000,),
             "embedded": (4, 10, 2), "graph": (4, 200), "lookups": (100_000, 4, 50),
             "routing": (48, 8, 3, 2), "tools": (8, 25), "latency": (200,)},
    "quick": {"placement": (2, 2, 1), "overhead": (2, 2, 1), "flat": (2, 20),
              "peer": (3, 2, 1), "service": (8, 2, 8), "scale": (200,),
              "scale_memory": (100,), "embedded": (2, 3, 1), "graph": (2, 12),
              "lookups": (2000, 4, 5), "routing": (6, 2, 3, 1), "tools": (2, 2),
              "latency": (10,)},
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_all(mode: str, workdir: Path) -> dict[str, Any]:
    sizes = SIZES[mode]
    started, clock = datetime.now(UTC), time.perf_counter()
    data: dict[str, Any] = {"mode": mode, "started_at": started.isoformat(),
                            "machine": machine_info(), "benchmarks": {}}
    # One PostgreSQL database per benchmark: LangChain's table has no index on the chat id,
    # so rows left by one benchmark would slow its reads in the next.
    with fake_model_process() as base_url, pg_database() as pg_overhead, \
            pg_database() as pg_flat, pg_database() as pg_peer, pg_database() as pg_service, \
            pg_database() as pg_tools:
        data["fake_model"] = {"delay_s": 0.0, "process": "separate",
                              "placement": placement.run(base_url, *sizes["placement"], log)}
        benches = data["benchmarks"]
        benches["overhead"] = overhead.run(base_url, pg_overhead, workdir, *sizes["overhead"],
                                           log)
        benches["flat"] = flat.run(workdir, pg_flat, *sizes["flat"], log)
        benches["tools"] = tools.run(workdir, pg_tools, *sizes["tools"], log)
        benches["graph"] = graph.run(workdir, *sizes["graph"], log)
        with pg_database() as pg_lookups:
            benches["lookups"] = lookups.run(base_url, workdir, *sizes["lookups"], log,
                                             pg_url=pg_lookups)
        benches["peer"] = peer.run(base_url, {"sqlite": "", "postgresql": pg_peer}, workdir,
                                   *sizes["peer"], log)
        # These start their own fake models and servers, as subprocesses.
        benches["service"] = service.run(workdir, pg_service, *sizes["service"], log)
        benches["latency"] = latency.run(workdir, *sizes["latency"], log)
        benches["scale"] = scale.run(workdir, sizes["scale"], *sizes["scale_memory"], log)
        benches["embedded"] = embedded.run(workdir, *sizes["embedded"], log)
        benches["routing"] = routing.run(*sizes["routing"], log)
    data["duration_s"] = time.perf_counter() - clock
    return data


def to_json(data: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line, so diffs stay readable."""
    text = json.dumps(data, indent=1)
    def inline(match: re.Match[str]) -> str:
        return "[" + ", ".join(item.rstrip(",") for item in match.group(1).split()) + "]"

    return _NUMBERS.sub(inline, text) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check it runs")
    parser.add_argument("--output", type=Path, help="write JSON, Markdown and PNG here only")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    with tempfile.TemporaryDirectory(prefix="chatsessions-bench-") as tmp:
        data = run_all(mode, Path(tmp))
    if args.output is not None:
        results_dir = docs_dir = args.output
        stamped = None
    else:
        results_dir, docs_dir = ROOT / "bench" / "results", ROOT / "docs"
        stamped = results_dir / f"{data['started_at'][:19].replace(':', '')}-{mode}.json"
    results_dir.mkdir(parents=True, exist_ok=True)
    docs_dir.mkdir(parents=True, exist_ok=True)
    text = to_json(data)
    (results_dir / "latest.json").write_text(text)
    if stamped is not None:
        stamped.write_text(text)
    report.plot(data, docs_dir / "benchmarks.png")
    (docs_dir / "benchmarks.md").write_text(report.markdown(data, "benchmarks.png"))
    for bench in data["benchmarks"].values():
        for ratio in bench["ratios"]:
            verdict = {True: "pass", False: "FAIL", None: "report"}[ratio["passed"]]
            unit = "x" if ratio.get("unit", "×") == "×" else f" {ratio['unit']}"
            log(f"{ratio['name']:28s} {ratio['value']:7.2f}{unit}  {verdict}")
    log(f"wrote {results_dir / 'latest.json'} and {docs_dir / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
