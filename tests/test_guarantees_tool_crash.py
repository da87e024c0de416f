"""Guarantee 8: a process killed between a tool call and its outputs leaves a chat that
goes on.

A live ``chatsessions serve`` on the fake model answers with two tool calls; the caller
submits their outputs while the model is slow, and the service is killed with SIGKILL
while the model call of that round is in flight. After a restart the chat still waits
for the same calls (nothing of the round was written), the outputs submitted again
(under the same ``Idempotency-Key``, or without one) complete the round once, and the
chat takes new messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatsessions.store import open_store
from chatsessions.testing import FakeLLMServer
from chatsessions.types import Message, Role, TurnStatus
from tests.procs import Services, report, service_env

ORDER = {"type": "function", "function": {
    "name": "order_status", "description": "Where an order is.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                   "required": ["order_id"]}}}
#: How long the fake model takes over the killed round: far longer than the kill needs.
SLOW = 20.0


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    yield running
    running.stop_all()


async def stored(database_url: str, chat_id: str) -> list[Message]:
    """The chat's rows straight from the database, whatever their status."""
    store = open_store(database_url)
    await store.open()
    try:
        return await store.messages(chat_id)
    finally:
        await store.close()


def rows_shape(rows: list[Message]) -> list[tuple[Role, TurnStatus, str | None]]:
    return [(m.role, m.status, m.tool_call_id) for m in rows if m.seq > 0]


async def round_in_flight(fake_llm: FakeLLMServer, deadline: float) -> None:
    """Wait until the model has been asked from the submitted outputs."""
    while not any(r.messages[-1].get("role") == "tool" for r in fake_llm.requests):
        assert time.monotonic() < deadline, "the tool round never reached the model"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("resubmit", ["same_idempotency_key", "without_a_key"])
async def test_kill_9_between_a_call_and_its_outputs(
    database_url: str, fake_llm: FakeLLMServer, services: Services, resubmit: str
) -> None:
    began = time.monotonic()
    env = service_env(database_url, fake_llm.base_url, "doomed")
    (victim,) = await services.start((env, "victim"))
    async with httpx.AsyncClient(base_url=victim.url, timeout=60) as http:
        chat = (await http.post("/chats", json={"system_prompt": "S",
                                                "tools": [ORDER]})).json()
        asked = (await http.post(f"/chats/{chat['id']}/messages",
                                 json={"content": "where are orders 12 and 34?"})).json()
        calls = asked["tool_calls"]
        assert len(calls) == 2
        body = {"results": [{"tool_call_id": calls[0]["id"], "output": "12: shipped"},
                            {"tool_call_id": calls[1]["id"], "output": "34: lost"}]}
        headers = {"Idempotency-Key": "round-1"}
        fake_llm.delay = SLOW
        submitted = asyncio.create_task(
            http.post(f"/chats/{chat['id']}/tool-results", json=body, headers=headers))
        await round_in_flight(fake_llm, time.monotonic() + 30)
        victim.kill()
        with pytest.raises(httpx.TransportError):  # the caller never got an answer
            await submitted
    fake_llm.delay = 0.0

    # Nothing of the round was written: the chat waits for the same two calls.
    before = rows_shape(await stored(database_url, chat["id"]))
    assert before == [(Role.USER, TurnStatus.OK, None), (Role.ASSISTANT, TurnStatus.OK, None)]

    restarted_at = time.monotonic()
    (successor,) = await services.start((env, "successor"))
    async with httpx.AsyncClient(base_url=successor.url, timeout=60) as http:
        waiting = (await http.get(f"/chats/{chat['id']}/tool-calls")).json()["data"]
        assert [c["id"] for c in waiting] == [c["id"] for c in calls]
        refused = await http.post(f"/chats/{chat['id']}/messages", json={"content": "hi?"})
        assert refused.status_code == 409
        again = headers if resubmit == "same_idempotency_key" else {}
        answer = await http.post(f"/chats/{chat['id']}/tool-results", json=body,
                                 headers=again)
        assert answer.status_code == 200, answer.text
        recovered_in = time.monotonic() - restarted_at
        assert "12: shipped" in answer.json()["content"]
        assert "34: lost" in answer.json()["content"]
        # Once more: the same key gives the stored answer; without a key, nothing waits.
        repeat = await http.post(f"/chats/{chat['id']}/tool-results", json=body,
                                 headers=again)
        if again:
            assert repeat.json() == answer.json()
        else:
            assert repeat.status_code == 422
            assert "not waiting" in repeat.json()["error"]["message"]
        assert (await http.get(f"/chats/{chat['id']}/tool-calls")).json()["data"] == []
        goes_on = await http.post(f"/chats/{chat['id']}/messages",
                                  json={"content": "thanks", "tool_choice": "none"})
        assert goes_on.status_code == 200
        listed: list[dict[str, Any]] = (
            await http.get(f"/chats/{chat['id']}/messages")).json()["data"]

    rows = await stored(database_url, chat["id"])
    assert all(m.status is not TurnStatus.PENDING for m in rows)
    outputs = [m.tool_call_id for m in rows if m.role is Role.TOOL]
    assert outputs == [c["id"] for c in calls]  # each output once, in the calls' order
    assert rows_shape(rows) == [
        (Role.USER, TurnStatus.OK, None), (Role.ASSISTANT, TurnStatus.OK, None),
        (Role.TOOL, TurnStatus.OK, calls[0]["id"]), (Role.TOOL, TurnStatus.OK, calls[1]["id"]),
        (Role.ASSISTANT, TurnStatus.OK, None),
        (Role.USER, TurnStatus.OK, None), (Role.ASSISTANT, TurnStatus.OK, None)]
    assert [r["role"] for r in listed] == [
        "user", "assistant", "tool", "tool", "assistant", "user", "assistant"]
    # the model was shown the round whole when the chat went on
    shown = fake_llm.chat_histories()[-1]
    assert [m.get("tool_call_id") for m in shown if m["role"] == "tool"] == [
        c["id"] for c in calls]
    report("tool_crash", database=database_url.split(":", 1)[0], resubmit=resubmit,
           outputs_written_before_the_kill=len(before) - 2, duplicated_outputs=0,
           restart_to_round_done_seconds=round(recovered_in, 2),
           seconds=round(time.monotonic() - began, 2))
