"""Chat-affine routing over three model servers against round robin.

Three fake models, each its own process, simulate a server's prefix cache
(``python -m chatsessions.testing --prefix-cache``): the first token waits 0.05 ms for
every prompt token the server has not seen from that chat, one prompt at a time per
server, and each server keeps the last prompt of 32 conversations (twice its share of the
chats), the least recently used dropped first. One `AsyncChatSessions` (in-memory store,
`backend="openai"`) gets the three as `openai_base_urls` and runs many chats whose turns
interleave (turn k of every chat, in a shuffled order and a few at a time, before anyone's
turn k+1), every turn
streamed, all chats sharing one long system prompt. Once with `openai_routing="affinity"`
(the default: each chat to its home on the hash ring, within the load bound), once with
`"round_robin"` (what a plain balancer in front of the servers does); the servers are
reset in between and the order alternates over passes. Time to first token runs from
calling `stream_message` to the first text delta; prompt tokens recomputed are summed
from the servers' own logs (prompt tokens minus those found in their cache). Three turns
are in flight at once, one per server on average: with twelve, on this benchmark's two
cores, the time to first token was the client's own CPU queue (about 120 ms on both
sides), not the servers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from bench.harness import MODEL, Ratio, median, user_text
from chatsessions import AsyncChatSessions

SECONDS_PER_TOKEN = 0.00005
CONVERSATIONS_KEPT = 32
ENDPOINTS = 3
SYSTEM_PROMPT = " ".join(
    ["You are the customer service attendant of a large online shop. Answer briefly and "
     "politely, ask for the order number when none is given, never promise a refund "
     "before the return is received, and hand over to a person when asked to."] * 20)
POLICIES = ("affinity", "round_robin")


@contextlib.contextmanager
def prefix_cached_models(count: int) -> Iterator[list[str]]:
    """``count`` fake models with a simulated prefix cache, each in its own process."""
    procs = [subprocess.Popen(
        [sys.executable, "-m", "chatsessions.testing", "--port", "0",
         "--prefix-cache", str(SECONDS_PER_TOKEN),
         "--prefix-cache-size", str(CONVERSATIONS_KEPT)],
        stdout=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        urls = []
        for proc in procs:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            if not url.startswith("http"):
                raise RuntimeError(f"a fake model did not start (printed {url!r})")
            urls.append(url)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Counted as the fake counts them: a role marker and the words of each message."""
    return sum(1 + len(str(m.get("content") or "").split()) for m in messages)


async def _server_logs(urls: list[str]) -> list[list[dict[str, Any]]]:
    async with httpx.AsyncClient() as client:
        return [(await client.get(url.removesuffix("/v1") + "/_fake/requests")).json()
                for url in urls]


async def _reset(urls: list[str]) -> None:
    async with httpx.AsyncClient() as client:
        for url in urls:
            (await client.post(url.removesuffix("/v1") + "/_fake/reset")).raise_for_status()


async def _pass(urls: list[str], policy: str, chats: int, turns: int,
                concurrency: int) -> dict[str, Any]:
    await _reset(urls)
    ttft: list[list[float]] = [[] for _ in range(turns)]
    gate = asyncio.Semaphore(concurrency)
    async with AsyncChatSessions(
        database_url="memory://", backend="openai", model=MODEL,
        openai_base_urls=urls, openai_routing=policy, openai_api_key="bench",
        system_prompt=SYSTEM_PROMPT, max_retries=0, auto_title=False,
    ) as sessions:
        ids = [await sessions.create_chat() for _ in range(chats)]

        async def turn(n: int, chat_id: str, k: int) -> None:
            async with gate:
                started = time.perf_counter()
                first: float | None = None
                async for item in sessions.stream_message(chat_id, user_text(n, k)):
                    if first is None and isinstance(item, str) and item:
                        first = time.perf_counter() - started
                assert first is not None
                ttft[k].append(first)

        # Chats come back in a different order each round, as users do (the same order
        # for both policies): a fixed order would let strict rotation land each chat on
        # the same server every time, an affinity no balancer has in practice.
        rng = random.Random(16)
        started = time.perf_counter()
        for k in range(turns):
            arrivals = list(enumerate(ids))
            rng.shuffle(arrivals)
            await asyncio.gather(*(turn(n, c, k) for n, c in arrivals))
        wall = time.perf_counter() - started
    logs = await _server_logs(urls)
    prompt = sum(_prompt_tokens(r["messages"]) for log in logs for r in log)
    cached = sum(r["cached_tokens"] for log in logs for r in log)
    per_server = [len(log) for log in logs]
    assert sum(per_server) == chats * turns
    return {"wall_s": wall, "ttft_s": [t for per_turn in ttft for t in per_turn],
            "ttft_per_turn_median_s": [median(t) for t in ttft],
            "prompt_tokens": prompt, "recomputed_tokens": prompt - cached,
            "requests_per_server": per_server}


def run(chats: int, turns: int, concurrency: int, passes: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {policy: [] for policy in POLICIES}
    with prefix_cached_models(ENDPOINTS) as urls:
        for number in range(passes):
            order = POLICIES if number % 2 == 0 else POLICIES[::-1]
            for policy in order:
                log(f"routing: pass {number + 1}/{passes}, {policy}")
                runs[policy].append(asyncio.run(_pass(urls, policy, chats, turns,
                                                      concurrency)))
    results: dict[str, Any] = {}
    for policy, done in runs.items():
        results[policy] = {
            "ttft_median_s": median([t for r in done for t in r["ttft_s"]]),
            "ttft_per_turn_median_s": [median([r["ttft_per_turn_median_s"][k] for r in done])
                                       for k in range(turns)],
            "recomputed_tokens": median([r["recomputed_tokens"] for r in done]),
            "prompt_tokens": median([r["prompt_tokens"] for r in done]),
            "wall_s": median([r["wall_s"] for r in done]),
            "requests_per_server": done[-1]["requests_per_server"],
        }
    ours, theirs = results["affinity"], results["round_robin"]
    ratios = [
        Ratio("routing_ttft_affinity", ours["ttft_median_s"] / theirs["ttft_median_s"], 0.8,
              "lower", "median time to first token, chat-affine / round robin, 3 servers"),
        Ratio("routing_recomputed_affinity",
              ours["recomputed_tokens"] / theirs["recomputed_tokens"], 0.5, "lower",
              "prompt tokens the servers read again, chat-affine / round robin"),
    ]
    return {
        "title": "Routing over several model servers",
        "sizes": {"chats": chats, "turns": turns, "in_flight": concurrency,
                  "passes": passes, "servers": ENDPOINTS},
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| routing | time to first token, median (ms) | by turn, first → last (ms) | "
             "prompt tokens read again / sent | requests per server | wall (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for policy, r in results.items():
        per_turn = r["ttft_per_turn_median_s"]
        lines.append(
            f"| {policy} | {r['ttft_median_s'] * 1e3:.1f} | {per_turn[0] * 1e3:.1f} → "
            f"{per_turn[-1] * 1e3:.1f} | {r['recomputed_tokens']:,.0f} / "
            f"{r['prompt_tokens']:,.0f} | {' / '.join(map(str, r['requests_per_server']))} "
            f"| {r['wall_s']:.2f} |")
    return lines
