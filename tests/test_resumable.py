"""Background responses and resumable streams over HTTP, with the official client where
it can: create/poll/cancel, a stream cut by its client after the first event completes
and is stored once, and ``starting_after`` / ``Last-Event-ID`` give the rest; a background
response whose process is killed ends ``failed``. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chatsessions.testing import FakeLLMServer, Fault
from tests.procs import Services, service_env

MODEL = "fake-model"
DEADLINE = 30.0


@pytest.fixture
def settings_kwargs(settings_kwargs: dict[str, object]) -> dict[str, object]:
    """Model calls may stall for long here: a stall is how a test holds a turn in flight
    (the fake ends every stall at once when it stops)."""
    return {**settings_kwargs, "request_timeout": 60.0}


def until(condition: Any, what: str) -> Any:
    """Poll ``condition()`` until it returns something truthy (a generous deadline)."""
    deadline = time.monotonic() + DEADLINE
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def stored(http: httpx.Client, chat_id: str) -> list[tuple[str, str]]:
    rows = http.get(f"/chats/{chat_id}/messages").json()["data"]
    return [(m["role"], m["status"]) for m in rows]


def sse_blocks(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Events as their fields (``id``, ``event``, ``data``), as they arrive."""
    block: dict[str, str] = {}
    for line in lines:
        if not line:
            if block:
                yield block
            block = {}
            continue
        name, _, value = line.partition(": ")
        block[name] = value


def test_background_create_poll_and_follow_up(sdk: openai.OpenAI, http: httpx.Client) -> None:
    created = sdk.responses.create(model=MODEL, input="what is the capital of France?",
                                   background=True)
    assert created.status in ("queued", "in_progress")
    assert created.background is True
    done = until(lambda: (r := sdk.responses.retrieve(created.id)).status == "completed" and r,
                 "the background response")
    assert done.output_text
    assert done.usage is not None
    assert done.usage.output_tokens > 0
    assert done.conversation is not None
    chat_id = done.conversation.id
    assert stored(http, chat_id) == [("user", "ok"), ("assistant", "ok")]
    follow_up = sdk.responses.create(model=MODEL, input="and of Spain?",
                                     previous_response_id=done.id)
    assert follow_up.conversation is not None
    assert follow_up.conversation.id == chat_id
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_" + "0" * 32)


def test_background_cancel_stops_the_model_call(
    sdk: openai.OpenAI, http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    fake_llm.inject(Fault.stall(after_chunks=1, seconds=50))
    created = sdk.responses.create(model=MODEL, input="a long answer please", background=True)
    chat_id = until(lambda: (r := sdk.responses.retrieve(created.id)).conversation and
                    stored(http, r.conversation.id) == [("user", "pending")] and
                    r.conversation.id, "the turn to start")
    until(lambda: fake_llm.requests, "the model call")
    cancelled = sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert sdk.responses.retrieve(created.id).status == "cancelled"
    assert stored(http, chat_id) == [("user", "failed")]
    with pytest.raises(openai.BadRequestError):  # a plain response is not cancellable
        sdk.responses.cancel(sdk.responses.create(model=MODEL, input="hi").id)


def test_a_stream_cut_after_its_first_event_completes_and_resumes(
    sdk: openai.OpenAI, http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    fake_llm.inject(Fault.stall(after_chunks=1, seconds=1.0))
    stream = sdk.responses.create(model=MODEL, input="tell me about the sea", stream=True)
    first = next(iter(stream))
    stream.close()  # the client goes away after the first event
    assert first.type == "response.created"
    assert first.sequence_number == 0
    response_id = first.response.id
    resumed = sdk.responses.retrieve(response_id, stream=True, starting_after=0)
    events = list(resumed)
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text
    assert sdk.responses.retrieve(response_id).output_text == deltas
    chat_id = events[-1].response.conversation.id  # type: ignore[union-attr]
    assert stored(http, chat_id) == [("user", "ok"), ("assistant", "ok")]
    # from further on, the rest only; past the end, nothing
    tail = list(sdk.responses.retrieve(response_id, stream=True, starting_after=len(events) - 1))
    assert [e.type for e in tail] == ["response.completed"]
    assert list(sdk.responses.retrieve(response_id, stream=True,
                                       starting_after=len(events))) == []


def test_our_sse_resumes_with_last_event_id(
    http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    fake_llm.inject(Fault.stall(after_chunks=1, seconds=1.0))
    with http.stream("POST", f"/chats/{chat_id}/messages",
                     json={"content": "one two three four five six", "stream": True}) as cut:
        first = next(sse_blocks(cut.iter_lines()))
    assert first["event"] == "delta"
    assert first["id"] == "2:0"  # the answer's seq, the event's number
    resumed = http.get(f"/chats/{chat_id}/messages/2/events",
                       headers={"Last-Event-ID": first["id"]})
    assert resumed.status_code == 200
    blocks = list(sse_blocks(iter([*resumed.text.splitlines(), ""])))
    assert [b["id"] for b in blocks] == [f"2:{n}" for n in range(1, len(blocks) + 1)]
    assert blocks[-1]["event"] == "done"
    answer = json.loads(blocks[-1]["data"])
    text = json.loads(first["data"])["content"] + "".join(
        json.loads(b["data"])["content"] for b in blocks[:-1])
    assert text.strip() == answer["content"]
    assert stored(http, chat_id) == [("user", "ok"), ("assistant", "ok")]
    again = http.get(f"/chats/{chat_id}/messages/2/events?after=-1")
    assert [b["event"] for b in sse_blocks(iter([*again.text.splitlines(), ""]))][-1] == "done"
    assert http.get(f"/chats/{chat_id}/messages/7/events").status_code == 404


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    yield running
    running.stop_all()


async def test_a_background_response_whose_process_is_killed_ends_failed(
    database_url: str, fake_llm: FakeLLMServer, services: Services
) -> None:
    ttl = 2.0
    victim, survivor = await services.start(
        (service_env(database_url, fake_llm.base_url, "victim", lease_ttl=ttl), "victim"),
        (service_env(database_url, fake_llm.base_url, "survivor", lease_ttl=ttl), "survivor"))
    fake_llm.inject(Fault.stall(after_chunks=1, seconds=50))
    async with httpx.AsyncClient(base_url=victim.url, timeout=30) as http:
        created = (await http.post("/v1/responses", json={
            "model": MODEL, "input": "a long one", "background": True})).json()
        deadline = time.monotonic() + DEADLINE
        while not fake_llm.requests:  # the model call is under way
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    victim.kill()
    async with httpx.AsyncClient(base_url=survivor.url, timeout=30) as other:
        deadline = time.monotonic() + DEADLINE
        while (polled := (await other.get(f"/v1/responses/{created['id']}")).json())[
                "status"] in ("queued", "in_progress"):
            assert time.monotonic() < deadline, "stuck in progress"
            await asyncio.sleep(0.1)
        assert polled["status"] == "failed"
        assert "interrupted" in polled["error"]["message"]

