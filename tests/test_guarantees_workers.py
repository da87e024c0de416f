"""Guarantee: `chatsessions serve --workers 2` is one service.

Turns go through both workers; every scrape of ``/metrics``, whichever worker answers it,
counts all of them; the periodic sweep runs once a period across the workers, not once
per worker.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatsessions.testing import FakeLLMServer
from tests.procs import Services, report, service_env
from tests.test_guarantees_replicas import lease_owners_while

SENDS = 30
#: the sweep period (it is the lease period)
PERIOD = 1.0
SCRAPES = 12


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    yield running
    running.stop_all()


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample's value from Prometheus text (0 if absent)."""
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def scrape(url: str) -> str:
    """``/metrics`` on a connection of its own (a kept-alive one sticks to one worker)."""
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 200
    return response.text


async def test_two_workers_are_one_service(
    database_url: str, fake_llm: FakeLLMServer, services: Services
) -> None:
    fake_llm.delay = 0.05  # each turn holds the lease long enough to be seen doing so
    env = service_env(database_url, fake_llm.base_url, "pod-1", lease_ttl=PERIOD)
    service = services.make(env, "workers", ("--workers", "2"))
    service.spawn()
    await service.ready()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=SENDS)) as http:
        chat = (await http.post(f"{service.url}/chats", json={})).json()
        sending = asyncio.gather(*(
            http.post(f"{service.url}/chats/{chat['id']}/messages",
                      json={"content": f"worker message {n:02d}"})
            for n in range(SENDS)))
        owners = await lease_owners_while(database_url, chat["id"], sending)
        assert [r.status_code for r in sending.result()] == [200] * SENDS
    # Both workers served turns, each under a lease name of its own ("pod-1/<pid>"), so
    # neither alone counted all of them.
    assert len(owners) == 2, owners
    scrapes = [await scrape(service.url) for _ in range(SCRAPES)]
    for text in scrapes:
        assert metric(text, "chatsessions_turns_total", 'status="ok"') == SENDS, text
        assert metric(text, "chatsessions_turn_latency_seconds_count") == SENDS
    # The sweep: once a period across both workers (twice as many if each swept).
    first = metric(await scrape(service.url), "chatsessions_sweeps_total")
    started = time.monotonic()
    await asyncio.sleep(5 * PERIOD)
    swept = metric(await scrape(service.url), "chatsessions_sweeps_total") - first
    periods = (time.monotonic() - started) / PERIOD
    assert 1 <= swept <= periods + 1, (swept, periods)
    report("workers", turns=SENDS, owners=len(owners), scrapes=SCRAPES,
           sweeps=swept, periods=round(periods, 2))
