"""FakeLLMServer driven by the real openai client over real HTTP, never mocks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import chatsessions
from chatsessions.testing import FakeLLMServer, Fault

HISTORY: list[dict[str, str]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello  there,\n general   Kenobi"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "Tell me a long story about a dragon and a very brave knight"},
]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(model="fake-model") as server:
        yield server


@pytest.fixture
def srv(shared_server: FakeLLMServer) -> Iterator[FakeLLMServer]:
    shared_server.reset()
    yield shared_server
    shared_server.reset()


@pytest.fixture
def client(srv: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
def http(srv: FakeLLMServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        yield c


def chat(client: openai.OpenAI, messages: Any, **kw: Any) -> Any:
    return client.chat.completions.create(model="m", messages=messages, **kw)


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    assert models.data[0].owned_by == "chatsessions-fake"


def test_answer_formula_and_usage(client: openai.OpenAI) -> None:
    reply = chat(client, HISTORY, temperature=0.2)
    pairs = [[m["role"], m["content"]] for m in HISTORY]
    dumped = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(dumped.encode()).hexdigest()[:8]
    answer = f'Reply 2 to "{HISTORY[-1]["content"]}" [{digest}]'
    assert FakeLLMServer.answer_for(HISTORY) == answer
    assert reply.choices[0].message.content == answer
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.object == "chat.completion"
    assert reply.model == "m"
    assert reply.id.startswith("chatcmpl-fake-")
    prompt = sum(len(m["content"].split()) + 4 for m in HISTORY)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == prompt
    assert reply.usage.completion_tokens == len(answer.split())
    assert reply.usage.total_tokens == prompt + len(answer.split())


def test_last_user_message_is_collapsed_and_cut() -> None:
    answer = FakeLLMServer.answer_for([{"role": "user", "content": "  a \n\n b\tc  " + "x" * 80}])
    assert answer.startswith('Reply 1 to "a b c ' + "x" * 54 + '" [')
    assert FakeLLMServer.answer_for([{"role": "system", "content": "s"}]).startswith(
        'Reply 0 to "" ['
    )


def test_stream_concatenates_to_the_plain_answer(client: openai.OpenAI) -> None:
    plain = chat(client, HISTORY).choices[0].message.content
    stream = chat(client, HISTORY, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(x for x in contents if x) == plain
    assert len([x for x in contents if x]) == len(plain.split())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(plain.split())


def test_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(chat(client, HISTORY, stream=True))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_request_log_records_messages_and_params(srv: FakeLLMServer, client: openai.OpenAI) -> None:
    before = time.monotonic()
    chat(client, HISTORY[:2], temperature=0.5, max_tokens=50)
    chat(client, HISTORY, stream=True).close()
    first, second = srv.requests
    assert first.messages == HISTORY[:2]
    assert first.model == "m"
    assert first.stream is False
    assert first.params == {"temperature": 0.5, "max_tokens": 50}
    assert first.fault is None
    assert before <= first.at <= second.at
    assert second.stream is True
    assert srv.chat_histories() == [HISTORY[:2], HISTORY]


@pytest.mark.parametrize("index", range(len(HISTORY)))
def test_answer_depends_on_every_history_message(index: int) -> None:
    changed = [dict(m) for m in HISTORY]
    changed[index]["content"] += "!"
    assert FakeLLMServer.answer_for(changed) != FakeLLMServer.answer_for(HISTORY)
    swapped = [dict(m) for m in HISTORY]
    swapped[index]["role"] = "tool" if swapped[index]["role"] != "tool" else "user"
    assert FakeLLMServer.answer_for(swapped) != FakeLLMServer.answer_for(HISTORY)


def test_server_answer_changes_with_earlier_history(client: openai.OpenAI) -> None:
    edited = [dict(m) for m in HISTORY]
    edited[0]["content"] = "You are verbose."
    a = chat(client, HISTORY).choices[0].message.content
    b = chat(client, edited).choices[0].message.content
    assert a != b
    assert b == FakeLLMServer.answer_for(edited)


def test_max_tokens_truncates_to_words(client: openai.OpenAI) -> None:
    reply = chat(client, HISTORY, max_tokens=3)
    assert reply.choices[0].message.content == "Reply 2 to"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3
    streamed = chat(client, HISTORY, max_tokens=3, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "Reply 2 to"


def test_rate_limit_without_retries(srv: FakeLLMServer, client: openai.OpenAI) -> None:
    srv.inject(Fault.status(429, retry_after=0))
    with pytest.raises(openai.RateLimitError) as info:
        chat(client, HISTORY)
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    assert [r.fault for r in srv.requests] == ["status_429"]
    assert chat(client, HISTORY).choices[0].message.content == FakeLLMServer.answer_for(HISTORY)


def test_rate_limit_is_retried_by_the_client(srv: FakeLLMServer) -> None:
    srv.inject(Fault.status(429, retry_after=1.5))
    with openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=2) as retrying:
        reply = chat(retrying, HISTORY)
    assert reply.choices[0].message.content == FakeLLMServer.answer_for(HISTORY)
    assert [r.fault for r in srv.requests] == ["status_429", None]
    # The header, not the client's backoff (0.5 s at most for a first retry), set the wait:
    # a lower bound, which a slow machine cannot break.
    first, again = srv.requests
    assert again.at - first.at >= 1.45


def test_status_fault_headers_and_body(srv: FakeLLMServer, http: httpx.Client) -> None:
    srv.inject(Fault.status(429, retry_after=1.5))
    srv.inject(Fault.status(503))
    body = {"model": "m", "messages": HISTORY}
    limited = http.post("/v1/chat/completions", json=body)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.headers["retry-after-ms"] == "1500"
    error = limited.json()["error"]
    assert error["type"] == error["code"] == "rate_limit_exceeded"
    assert error["param"] is None
    unavailable = http.post("/v1/chat/completions", json=body)
    assert unavailable.status_code == 503
    assert unavailable.json()["error"]["type"] == "server_error"
    assert "retry-after" not in unavailable.headers


def test_server_error(srv: FakeLLMServer, client: openai.OpenAI) -> None:
    srv.inject(Fault.status(500), times=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            chat(client, HISTORY)
    assert chat(client, HISTORY).choices[0].message.content


def test_timeout_fault(srv: FakeLLMServer) -> None:
    srv.inject(Fault.timeout(2))
    with openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0, timeout=0.3) as c:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            chat(c, HISTORY)
        assert time.monotonic() - started < 1.5
        assert chat(c, HISTORY).choices[0].message.content  # other requests are not blocked
    assert [r.fault for r in srv.requests] == ["timeout", None]


def test_cut_stream_breaks_the_stream(srv: FakeLLMServer, client: openai.OpenAI) -> None:
    srv.inject(Fault.cut_stream(2))
    received: list[str] = []
    with pytest.raises((openai.APIConnectionError, httpx.TransportError)):  # noqa: PT012
        for chunk in chat(client, HISTORY, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    full = FakeLLMServer.answer_for(HISTORY)
    assert [x for x in received if x] == ["Reply ", "2 "]
    assert len("".join(received)) < len(full)
    assert srv.requests[0].fault == "cut_stream"


def test_cut_stream_on_a_plain_request_drops_the_connection(
    srv: FakeLLMServer, client: openai.OpenAI
) -> None:
    srv.inject(Fault.cut_stream())
    with pytest.raises(openai.APIConnectionError):
        chat(client, HISTORY)
    assert chat(client, HISTORY).choices[0].message.content


def test_fault_rate(srv: FakeLLMServer, client: openai.OpenAI) -> None:
    srv.fault_rate = 1.0
    for _ in range(12):
        with pytest.raises(openai.APIError):
            chat(client, HISTORY)
    names = [r.fault for r in srv.requests]
    assert None not in names
    assert set(names) <= {f.name for f in srv.random_faults}
    srv.reset()
    srv.fault_rate = 1.0
    for _ in range(12):
        with pytest.raises(openai.APIError):
            chat(client, HISTORY)
    assert [r.fault for r in srv.requests] == names  # the seeded RNG makes runs repeatable
    srv.reset()
    assert srv.fault_rate == 0.0
    for _ in range(12):
        chat(client, HISTORY)
    assert [r.fault for r in srv.requests] == [None] * 12


def test_bad_requests_get_openai_errors(http: httpx.Client, client: openai.OpenAI) -> None:
    bad = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "x"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    for body in ({"model": "m"}, {"model": "m", "messages": []}, [1], {"messages": ["hi"]}):
        response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, body
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    missing = http.get("/v1/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    with pytest.raises(openai.BadRequestError):
        chat(client, [])


def test_control_endpoints(srv: FakeLLMServer, http: httpx.Client, client: openai.OpenAI) -> None:
    queued = http.post("/_fake/faults", json={"kind": "status", "code": 503, "times": 2})
    assert queued.json() == {"queued": 2}
    http.post("/_fake/faults", json={"kind": "cut_stream", "after_chunks": 1}).raise_for_status()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            chat(client, HISTORY)
    with pytest.raises(openai.APIConnectionError):
        chat(client, HISTORY)
    log = http.get("/_fake/requests").json()
    assert [r["fault"] for r in log] == ["status_503", "status_503", "cut_stream"]
    assert log[0]["messages"] == HISTORY
    assert log[0]["model"] == "m"
    assert log[0]["stream"] is False

    config = http.post("/_fake/config", json={"delay": 0.2, "fault_rate": 0})
    assert config.json() == {"delay": 0.2, "fault_rate": 0.0}
    assert srv.delay == 0.2
    started = time.monotonic()
    chat(client, HISTORY)
    assert time.monotonic() - started >= 0.2

    http.post("/_fake/faults", json={"kind": "timeout", "seconds": 5}).raise_for_status()
    assert http.post("/_fake/reset").status_code == 200
    assert srv.requests == []
    assert srv.delay == 0.0
    assert chat(client, HISTORY).choices[0].message.content  # the queued timeout is gone
    assert http.post("/_fake/faults", json={"kind": "nope"}).status_code == 400
    assert http.post("/_fake/config", json={"fault_rate": 2}).status_code == 400
    assert http.post("/_fake/nope").status_code == 404


async def test_async_client_many_concurrent_chats(srv: FakeLLMServer) -> None:
    histories: list[Any] = [[{"role": "user", "content": f"question {i}"}] for i in range(50)]
    async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0) as c:
        replies = await asyncio.gather(
            *(c.chat.completions.create(model="m", messages=h) for h in histories)
        )
        stream = await c.chat.completions.create(model="m", messages=histories[0], stream=True)
        streamed = "".join([ch.choices[0].delta.content or "" async for ch in stream])
    answers = [r.choices[0].message.content for r in replies]
    assert answers == [FakeLLMServer.answer_for(h) for h in histories]
    assert streamed == answers[0]
    assert sorted(map(str, srv.chat_histories())) == sorted(map(str, [*histories, histories[0]]))


def test_lifecycle_and_prompt_stop_during_a_timeout_fault() -> None:
    server = FakeLLMServer(port=0, delay=0.0)
    with pytest.raises(RuntimeError):
        _ = server.base_url
    server.start()
    assert server.port != 0
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    server.inject(Fault.timeout(30))
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(
                httpx.post(
                    server.base_url + "/chat/completions", json={"messages": HISTORY}, timeout=60
                ).status_code
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    caller.join(5)
    assert outcome
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{server.port}/v1/models")


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="HTTP error code"):
        Fault.status(200)
    with pytest.raises(ValueError, match="seconds"):
        Fault.timeout(-1)
    with pytest.raises(ValueError, match="after_chunks"):
        Fault.cut_stream(-1)
    with pytest.raises(ValueError, match="fault_rate"):
        FakeLLMServer(fault_rate=1.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_runs_as_a_separate_process() -> None:
    port = free_port()
    env = dict(os.environ)
    src = str(Path(chatsessions.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "chatsessions.testing", "--port", str(port), "--seed", "1"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().strip()
            assert base_url == f"http://127.0.0.1:{port}/v1"
            with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as c:
                reply = chat(c, HISTORY)
            assert reply.choices[0].message.content == FakeLLMServer.answer_for(HISTORY)
            log = httpx.get(f"http://127.0.0.1:{port}/_fake/requests").json()
            assert [r["messages"] for r in log] == [HISTORY]
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0
