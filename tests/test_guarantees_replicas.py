"""Guarantee 1: one turn at a time per chat, across processes.

Two real `chatsessions serve` processes share one database (PostgreSQL, or one SQLite
file) and take 50 concurrent sends to the same chat between them.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from chatsessions.testing import FakeLLMServer
from tests.procs import Services, report, service_env

SENDS = 50


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    yield running
    running.stop_all()


def check_history(system_prompt: str, stored: list[dict[str, Any]]) -> None:
    """Strictly alternating, all ok, each answer derived from exactly the history before it."""
    assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
    assert [m["role"] for m in stored] == ["user", "assistant"] * (len(stored) // 2)
    assert {m["status"] for m in stored} == {"ok"}
    context = [{"role": "system", "content": system_prompt}]
    for message in stored:
        if message["role"] == "assistant":
            assert message["content"] == FakeLLMServer.answer_for(context), message["seq"]
        context.append({"role": message["role"], "content": message["content"]})


async def lease_owners_while(database_url: str, chat_id: str,
                             running: asyncio.Future[Any]) -> set[str]:
    """Every lease owner seen on the chat's row until ``running`` is done, read straight
    from the database: which processes held the chat for a turn."""
    owners: set[str] = set()
    sql = "SELECT lease_owner FROM chats WHERE id = "
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            while not running.done():
                row = conn.execute(sql + "?", (chat_id,)).fetchone()
                owners.update([row[0]] if row and row[0] else [])
                await asyncio.sleep(0.005)
        finally:
            conn.close()
    else:
        pg = await asyncpg.connect(database_url.replace("postgresql://", "postgres://", 1))
        try:
            while not running.done():
                owner = await pg.fetchval(sql + "$1", chat_id)
                owners.update([owner] if owner else [])
                await asyncio.sleep(0.005)
        finally:
            await pg.close()
    await running
    return owners


async def test_two_processes_serialize_turns_on_one_chat(
    database_url: str, fake_llm: FakeLLMServer, services: Services
) -> None:
    fake_llm.delay = 0.01  # long enough for the two replicas' turns to overlap
    a, b = await services.start(
        (service_env(database_url, fake_llm.base_url, "replica-a"), "a"),
        (service_env(database_url, fake_llm.base_url, "replica-b"), "b"),
    )
    limits = httpx.Limits(max_connections=2 * SENDS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        chat = (await http.post(f"{a.url}/chats", json={})).json()
        texts = [f"message {n:02d} of the crowd" for n in range(SENDS)]
        started = time.monotonic()
        responses = await asyncio.gather(*(
            http.post(f"{(a, b)[n % 2].url}/chats/{chat['id']}/messages", json={"content": text})
            for n, text in enumerate(texts)
        ))
        elapsed = time.monotonic() - started
        assert [r.status_code for r in responses] == [200] * SENDS, [
            r.json() for r in responses if r.status_code != 200]
        listed = await http.get(f"{b.url}/chats/{chat['id']}/messages", params={"limit": 1000})
        stored = listed.json()["data"]
        counters = (await http.get(f"{a.url}/chats/{chat['id']}")).json()

    assert len(stored) == 2 * SENDS
    check_history(chat["system_prompt"], stored)
    users = [m["content"] for m in stored if m["role"] == "user"]
    assert sorted(users) == sorted(texts)  # every message present exactly once
    for text, response in zip(texts, responses, strict=True):
        answer = response.json()
        # each client got the answer to its own message, as stored
        assert stored[answer["seq"] - 1] == answer
        assert stored[answer["seq"] - 2]["content"] == text
    assert counters["message_count"] == 2 * SENDS
    assert counters["prompt_tokens"] == sum(m["prompt_tokens"] for m in stored)
    assert counters["completion_tokens"] == sum(m["completion_tokens"] for m in stored)
    assert len(fake_llm.requests) == SENDS  # no turn asked the model twice
    # How often consecutive turns came from different replicas (a figure, not a proof: with
    # both replicas' messages stored it is at least 1 whatever the lease does).
    by_replica = [texts.index(u) % 2 for u in users]
    handovers = sum(x != y for x, y in itertools.pairwise(by_replica))
    report("replicas", database=database_url.split(":", 1)[0], processes=2, sends=SENDS,
           messages=len(stored), handovers=handovers, lost=0, duplicates=0,
           seconds=round(elapsed, 2))


async def test_workers_sharing_a_replica_id_serialize_turns(
    database_url: str, fake_llm: FakeLLMServer, services: Services
) -> None:
    """`serve --workers 2` hands one replica id to both workers: each process must still
    hold leases under a name of its own."""
    fake_llm.delay = 0.05  # each turn holds the lease long enough to be seen doing so
    service = services.make(service_env(database_url, fake_llm.base_url, "pod-1"), "workers",
                            ("--workers", "2"))
    service.spawn()
    await service.ready()
    sends = 40
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=sends)) as http:
        chat = (await http.post(f"{service.url}/chats", json={})).json()
        texts = [f"worker message {n:02d}" for n in range(sends)]
        sending = asyncio.gather(*(
            http.post(f"{service.url}/chats/{chat['id']}/messages", json={"content": text})
            for text in texts))
        owners = await lease_owners_while(database_url, chat["id"], sending)
        responses = sending.result()
        assert [r.status_code for r in responses] == [200] * sends
        listed = await http.get(f"{service.url}/chats/{chat['id']}/messages",
                                params={"limit": 1000})
    # Both workers served turns, each under a lease name of its own ("pod-1/<pid>").
    assert len(owners) == 2, owners
    assert all(owner.startswith("pod-1/") for owner in owners), owners
    stored = listed.json()["data"]
    check_history(chat["system_prompt"], stored)
    assert sorted(m["content"] for m in stored if m["role"] == "user") == sorted(texts)
