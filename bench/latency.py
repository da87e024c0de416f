"""Target 4b: what a streamed turn adds to the model's own time to first token.

One client, one request at a time, so the figure is latency and not queueing: the fake
model (zero delay, its own process) and ``chatsessions serve`` on a SQLite file (its own
process). Each sample takes three streamed requests in lockstep, the first to go rotating:

* the model itself: ``POST /v1/chat/completions`` with ``stream`` and the messages the
  turn will send (the system prompt and one user message), until the first content delta;
* ``POST /chats/{id}/messages`` with ``Accept: text/event-stream`` on a fresh chat, until
  the first ``delta`` event;
* ``POST /v1/responses`` with ``stream`` on a fresh conversation, until the first
  ``response.output_text.delta`` event.

Each time runs from sending the request to reading the first event carrying text, on a
keep-alive connection of one httpx2 client (the rest of each stream is read, untimed).
The figure is the median over samples of the endpoint's time minus the median of the
model's own: the milliseconds the service adds before the first token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import MODEL, SYSTEM_PROMPT, Ratio, median, user_text
from bench.servers import Server, chatsessions_service, fake_model, httpx, running

#: milliseconds a streamed turn may add to the model's time to first token
TARGET_ADDED_MS = 2.0
WARMUP = 10


def _model_text(line: str) -> bool:
    """Whether a chat completions stream line carries answer text."""
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[6:]).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content"))


async def _first_text(http: httpx.AsyncClient, url: str, body: dict[str, Any],
                      has_text: Callable[[str], bool],
                      headers: dict[str, str] | None = None) -> float:
    """Seconds from sending to the first SSE line with text in it; reads the rest."""
    started = time.perf_counter()
    first = None
    async with http.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
        async for line in response.aiter_lines():
            if first is None and has_text(line):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{url}: the stream had no text")
    return first


class _Sides:
    def __init__(self, http: httpx.AsyncClient, model: Server, service: Server) -> None:
        self.http, self.model, self.service = http, model, service

    async def _chat(self) -> str:
        response = await self.http.post(f"{self.service.url}/chats", json={})
        response.raise_for_status()
        return str(response.json()["id"])

    async def model_alone(self, index: int) -> float:
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": user_text(index, 0)}]
        return await _first_text(
            self.http, f"{self.model.url}/v1/chat/completions",
            {"model": MODEL, "messages": messages, "max_tokens": 512, "stream": True,
             "stream_options": {"include_usage": True}}, _model_text)

    async def messages_sse(self, index: int) -> float:
        chat_id = await self._chat()
        return await _first_text(
            self.http, f"{self.service.url}/chats/{chat_id}/messages",
            {"content": user_text(index, 0)}, lambda line: line == "event: delta",
            {"Accept": "text/event-stream"})

    async def responses_sse(self, index: int) -> float:
        chat_id = await self._chat()
        return await _first_text(
            self.http, f"{self.service.url}/v1/responses",
            {"model": MODEL, "input": user_text(index, 0), "conversation": chat_id,
             "stream": True}, lambda line: line == "event: response.output_text.delta")


async def _measure(model: Server, service: Server, samples: int) -> dict[str, list[float]]:
    async with httpx.AsyncClient(timeout=60) as http:
        sides = _Sides(http, model, service)
        calls: dict[str, Callable[[int], Any]] = {
            "model": sides.model_alone, "messages_sse": sides.messages_sse,
            "responses_sse": sides.responses_sse}
        names = list(calls)
        times: dict[str, list[float]] = {name: [] for name in names}
        for index in range(WARMUP + samples):
            shift = index % len(names)
            for name in [*names[shift:], *names[:shift]]:
                took = await calls[name](index)
                if index >= WARMUP:
                    times[name].append(took)
        return times


def run(workdir: Path, samples: int, log: Callable[[str], None]) -> dict[str, Any]:
    log(f"latency: time to first token, streamed, {samples} samples of 3 requests in "
        "lockstep, one at a time")
    model = fake_model(workdir)
    service = chatsessions_service("latency", workdir,
                                   f"sqlite:///{workdir / 'latency.db'}", model.url + "/v1")
    with running(model, service):
        times = asyncio.run(_measure(model, service, samples))
    results = {name: {"ttft_median_ms": median(v) * 1e3,
                      "ttft_p90_ms": sorted(v)[int(len(v) * 0.9)] * 1e3, "samples": len(v)}
               for name, v in times.items()}
    own = results["model"]["ttft_median_ms"]
    for name in ("messages_sse", "responses_sse"):
        results[name]["added_ms"] = results[name]["ttft_median_ms"] - own
    ratios = [
        Ratio("ttft_added_ms_messages_sse", results["messages_sse"]["added_ms"],
              TARGET_ADDED_MS, "lower", "milliseconds a streamed "
              "POST /chats/{id}/messages adds to the model's own time to first token "
              f"({own:.2f} ms), median", "ms"),
        Ratio("ttft_added_ms_responses_sse", results["responses_sse"]["added_ms"],
              TARGET_ADDED_MS, "lower", "milliseconds a streamed "
              f"POST /v1/responses adds to the model's own time to first token ({own:.2f} "
              "ms), median", "ms"),
    ]
    return {
        "title": "Added latency",
        "sizes": {"samples": samples, "warm_up": WARMUP},
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| request | time to first token, median / p90 (ms) | added over the model (ms) |",
             "| --- | ---: | ---: |"]
    for name, r in results.items():
        added = f"{r['added_ms']:+.2f}" if "added_ms" in r else "–"
        lines.append(f"| {name} | {r['ttft_median_ms']:.2f} / {r['ttft_p90_ms']:.2f} | "
                     f"{added} |")
    return lines
