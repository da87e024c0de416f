"""The benchmarks still run: ``python -m bench --quick`` end to end, in a subprocess.

Quick sizes say nothing about speed, so only the shape of the results is checked: every
benchmark is there, every ratio is a finite number, every side did the same work. The
embedded-model benchmark runs the real local model, hence the ``local_model`` mark.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
@pytest.mark.local_model
@pytest.mark.timeout(300)
def test_quick_benchmarks_write_results_and_docs(tmp_path: Path) -> None:
    committed = [ROOT / "bench" / "results" / "latest.json", ROOT / "docs" / "benchmarks.md"]
    before = [p.stat().st_mtime_ns if p.exists() else None for p in committed]
    done = subprocess.run(  # run from the project root, where the bench package lives
        [sys.executable, "-m", "bench", "--quick", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    # --output keeps the committed full-run results and page as they were
    assert [p.stat().st_mtime_ns if p.exists() else None for p in committed] == before

    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["mode"] == "quick"
    assert data["machine"]["cpu_count"] >= 1
    assert data["machine"]["python"]
    assert set(data["benchmarks"]) == {"overhead", "flat", "graph", "peer", "service",
                                       "scale", "embedded", "lookups", "routing", "tools",
                                       "latency"}
    for name, bench in data["benchmarks"].items():
        assert bench["ratios"], name
        for ratio in bench["ratios"]:
            assert isinstance(ratio["value"], float), ratio
            assert math.isfinite(ratio["value"]), ratio
            assert ratio["value"] > 0, ratio
            assert ratio["passed"] in (True, False, None), ratio
    # The sides that run the same conversations must have been given the same answers.
    for name in ("overhead", "peer", "service"):
        assert data["benchmarks"][name]["same_answers_on_every_side"] is True, name
    assert math.isfinite(data["fake_model"]["placement"]["in_process_over_separate"])
    assert data["benchmarks"]["service"]["no_failures"]
    scale = data["benchmarks"]["scale"]
    assert [s["succeeded"] for s in scale["steps"]] == [s["chats"] for s in scale["steps"]]
    assert scale["memory"]["rss_bytes"]["before"] > 0
    floor = scale["bare_proxy"]
    assert [floor[c]["succeeded"] for c in ("httpx", "aiohttp")] == [floor["chats"]] * 2
    latency = data["benchmarks"]["latency"]["results"]
    samples = data["benchmarks"]["latency"]["sizes"]["samples"]
    assert [r["samples"] for r in latency.values()] == [samples] * 3
    embedded = data["benchmarks"]["embedded"]["results"]
    assert embedded["state_cache_on"]["state_cache"]["hits"] > 0
    assert embedded["state_cache_off"]["state_cache"]["enabled"] is False

    for side in data["benchmarks"]["tools"]["results"].values():  # every step was counted
        assert min(side[f"{step}_statements"] for step in ("turn", "call", "round")) > 0
    page = (tmp_path / "benchmarks.md").read_text()
    assert "| `overhead_sqlite_sync` |" in page
    routed = data["benchmarks"]["routing"]["results"]
    assert routed["affinity"]["prompt_tokens"] == routed["round_robin"]["prompt_tokens"]
    for name in ("service_sqlite_rate", "scale_wall_over_model_latency", "routing_ttft_affinity",
                 "scale_wall_vs_proxy_httpx", "embedded_ttft_cache_on",
                 "tools_postgresql_statements",
                 "service_sqlite_server_cpu_vs_aiohttp_proxy", "scale_wall_vs_proxy_aiohttp",
                 "ttft_added_ms_messages_sse", "ttft_added_ms_responses_sse"):
        assert f"| `{name}` |" in page
    assert (tmp_path / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
