"""Guarantee 2: idempotency.

A client that retries with the same ``Idempotency-Key`` while its first request is still
running (on the same replica or another one) gets the first request's result, and the chat
gets one turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatsessions.testing import FakeLLMServer, Fault
from tests.conftest import LiveServer
from tests.procs import Services, report, service_env

SLOW = 0.6  # seconds the fake model takes: the retries arrive while it is still thinking


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    yield running
    running.stop_all()


async def wait_for_model_call(fake_llm: FakeLLMServer, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(fake_llm.requests) < count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def done_event(response: httpx.Response) -> dict[str, Any]:
    import json

    last = response.text.strip().split("\n\n")[-1]
    fields = dict(line.split(": ", 1) for line in last.splitlines())
    assert fields["event"] == "done", response.text
    data: dict[str, Any] = json.loads(fields["data"])
    return data


async def test_retries_while_the_first_request_runs_make_one_turn(
    live_server: LiveServer, fake_llm: FakeLLMServer, database_url: str
) -> None:
    fake_llm.delay = SLOW
    key = {"Idempotency-Key": "order-42-attempt"}
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        chat_id = (await http.post("/chats", json={})).json()["id"]
        url = f"/chats/{chat_id}/messages"
        body = {"content": "Where is my parcel?"}
        first = asyncio.create_task(http.post(url, json=body, headers=key))
        await wait_for_model_call(fake_llm, 1)
        # The client gave up on its first attempt and tries again, plain and streaming.
        retries = await asyncio.gather(
            http.post(url, json=body, headers=key),
            http.post(url, json={**body, "stream": True}, headers=key),
            http.post(url, json=body, headers=key),
        )
        original = (await first).json()
        assert [r.status_code for r in retries] == [200, 200, 200]
        assert retries[0].json() == original == retries[2].json()
        assert done_event(retries[1]) == original
        # Later, the same key still answers with the same message, without asking the model.
        again = await http.post(url, json=body, headers=key)
        assert again.json() == original
        # The same key with another message is a client error, and nothing is stored.
        other = await http.post(url, json={"content": "Something else"}, headers=key)
        assert other.status_code == 422
        assert other.json()["error"]["type"] == "invalid_request"
        assert "Idempotency-Key" in other.json()["error"]["message"]

        stored = (await http.get(url)).json()["data"]
        assert [(m["role"], m["status"]) for m in stored] == [("user", "ok"),
                                                              ("assistant", "ok")]
        assert stored[1] == original
        assert len(fake_llm.requests) == 1

        # A request whose turn failed is replayed as that failure, not run a second time.
        fake_llm.delay = 0.0
        fake_llm.inject(Fault.status(500))
        failed_key = {"Idempotency-Key": "order-43-attempt"}
        failed = await http.post(url, json={"content": "And my refund?"}, headers=failed_key)
        replayed = await http.post(url, json={"content": "And my refund?"}, headers=failed_key)
        assert failed.status_code == replayed.status_code == 502
        assert "already failed" in replayed.json()["error"]["message"]
        assert len(fake_llm.requests) == 2
        assert (await http.get(f"/chats/{chat_id}")).json()["message_count"] == 3
    report("idempotency", database=database_url.split(":", 1)[0], concurrent_retries=3,
           turns_stored=2, model_calls=2)


async def test_a_client_that_times_out_and_retries_gets_the_first_answer(
    live_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    fake_llm.delay = SLOW
    key = {"Idempotency-Key": "impatient"}
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        chat_id = (await http.post("/chats", json={})).json()["id"]
        url = f"/chats/{chat_id}/messages"
        with pytest.raises(httpx.ReadTimeout):
            await http.post(url, json={"content": "hello?"}, headers=key, timeout=SLOW / 3)
        retried = await http.post(url, json={"content": "hello?"}, headers=key)
        assert retried.status_code == 200, retried.json()
        stored = (await http.get(url)).json()["data"]
        assert [m["content"] for m in stored] == ["hello?", retried.json()["content"]]
        assert len(fake_llm.requests) == 1


async def test_retry_on_another_replica_waits_for_the_first(
    database_url: str, fake_llm: FakeLLMServer, services: Services
) -> None:
    fake_llm.delay = SLOW
    a, b = await services.start(
        (service_env(database_url, fake_llm.base_url, "replica-a"), "a"),
        (service_env(database_url, fake_llm.base_url, "replica-b"), "b"),
    )
    key = {"Idempotency-Key": "across-replicas"}
    async with httpx.AsyncClient(timeout=30) as http:
        chat_id = (await http.post(f"{a.url}/chats", json={})).json()["id"]
        body = {"content": "one turn only"}
        first = asyncio.create_task(
            http.post(f"{a.url}/chats/{chat_id}/messages", json=body, headers=key))
        await wait_for_model_call(fake_llm, 1)
        retry = await http.post(f"{b.url}/chats/{chat_id}/messages", json=body, headers=key)
        original = await first
        assert original.status_code == retry.status_code == 200
        assert retry.json() == original.json()
        stored = (await http.get(f"{b.url}/chats/{chat_id}/messages")).json()["data"]
        assert [m["content"] for m in stored] == ["one turn only", original.json()["content"]]
        assert len(fake_llm.requests) == 1


async def test_chat_creation_with_one_key_makes_one_chat(
    live_server: LiveServer, database_url: str
) -> None:
    key = {"Idempotency-Key": "new-customer-7"}
    body = {"title": "order help", "metadata": {"customer": 7}}
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        created = await asyncio.gather(*(http.post("/chats", json=body, headers=key)
                                         for _ in range(10)))
        assert {r.status_code for r in created} == {201}
        assert len({r.json()["id"] for r in created}) == 1
        later = await http.post("/chats", json=body, headers=key)
        assert later.json()["id"] == created[0].json()["id"]
        different = await http.post("/chats", json={"title": "another"}, headers=key)
        assert different.status_code == 422
        assert different.json()["error"]["type"] == "invalid_request"
        listed = (await http.get("/chats")).json()["data"]
        assert [c["id"] for c in listed] == [created[0].json()["id"]]
    report("idempotent_create", database=database_url.split(":", 1)[0],
           concurrent_creates=10, chats_created=1)
