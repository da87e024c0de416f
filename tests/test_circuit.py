"""The circuit breaker as a table of events, then against a failing real HTTP backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing

import httpx
import pytest

from chatsessions import AsyncChatSessions, BackendError, BackendUnavailable
from chatsessions.engine.circuit import CircuitBreaker, counts_as_outage
from chatsessions.testing import FakeLLMServer, Fault
from tests.conftest import LiveServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("status", "outage"),
    [(None, True), (500, True), (503, True), (429, True), (408, True), (400, False),
     (401, False), (404, False)],
)
def test_what_counts_as_an_outage(status: int | None, outage: bool) -> None:
    assert counts_as_outage(BackendError("x", status_code=status)) is outage


def test_opens_after_threshold_and_recovers_through_one_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown=10, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.failure(BackendError("boom", status_code=500))
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.failure(BackendError("boom", status_code=500))
    assert breaker.state == "open"
    with pytest.raises(BackendUnavailable, match="10 more seconds"):
        breaker.before_call()
    clock.now = 10
    assert breaker.state == "half-open"
    breaker.before_call()  # the one trial
    with pytest.raises(BackendUnavailable):
        breaker.before_call()  # others still fail fast while the trial runs
    breaker.success()
    assert breaker.state == "closed"
    breaker.before_call()


def test_failed_trial_reopens_and_abandoned_trial_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure(BackendError("down"))
    clock.now = 5
    breaker.before_call()
    breaker.failure(BackendError("still down"))
    assert breaker.state == "open"
    clock.now = 10
    breaker.before_call()
    breaker.abandon()  # cancelled: no verdict
    breaker.before_call()  # the next caller becomes the trial


def test_the_refusal_says_how_long_is_left_of_the_cooldown() -> None:
    clock = Clock()
    clock.now = 100.0
    breaker = CircuitBreaker(threshold=1, cooldown=30, clock=clock)
    breaker.failure(BackendError("down"))
    clock.now = 110.0
    with pytest.raises(BackendUnavailable, match=r"\(1 failures in a row\).* 20 more seconds"):
        breaker.before_call()
    clock.now = 129.6  # under half a second left: rounds to nothing, never up to a second
    with pytest.raises(BackendUnavailable, match=" 0 more seconds"):
        breaker.before_call()


def test_a_success_forgets_earlier_failures_and_frees_the_next_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown=5, clock=clock)
    for _ in range(2):
        breaker.failure(BackendError("boom", status_code=500))
    breaker.success()
    for _ in range(2):
        breaker.failure(BackendError("boom", status_code=500))
    assert breaker.state == "closed"  # two in a row again, not four
    breaker.failure(BackendError("boom", status_code=500))
    assert breaker.state == "open"
    clock.now = 5
    breaker.before_call()  # the trial
    breaker.success()
    for _ in range(3):
        breaker.failure(BackendError("boom", status_code=500))
    clock.now = 10
    breaker.before_call()  # the next outage has its own trial


def test_a_client_error_in_the_trial_is_no_verdict() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure(BackendError("down"))
    clock.now = 5
    breaker.before_call()
    breaker.failure(BackendError("bad request", status_code=400))
    assert breaker.state == "half-open"
    breaker.before_call()  # says nothing of the backend's health: the next caller tries


def test_client_errors_do_not_open_the_circuit() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=5)
    breaker.failure(BackendError("bad request", status_code=400))
    assert breaker.state == "closed"


async def test_failing_backend_fails_fast_then_recovers(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    kwargs = {**settings_kwargs, "circuit_failures": 2, "circuit_cooldown": 0.5}
    async with AsyncChatSessions(**kwargs) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        fake_llm.inject(Fault.status(503), times=2)
        for _ in range(2):
            with pytest.raises(BackendError):
                await chats.send_message(chat_id, "anyone there?")
        calls = len(fake_llm.requests)
        with pytest.raises(BackendUnavailable):
            await chats.send_message(chat_id, "still there?")
        assert len(fake_llm.requests) == calls  # failed fast, the backend was not called
        history = await chats.history(chat_id, include_failed=True)
        assert history[-1].content == "still there?"  # the message is kept all the same
        import asyncio

        await asyncio.sleep(0.6)
        assert await chats.send_message(chat_id, "back?")


async def test_every_kind_of_model_call_is_refused_while_open(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    """Turns, unstored answers and stateless completions share one circuit per backend;
    a refused call is not counted as a failure, so the cooldown still ends."""
    kwargs = {**settings_kwargs, "circuit_failures": 1, "circuit_cooldown": 60.0}
    async with AsyncChatSessions(**kwargs) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        fake_llm.inject(Fault.status(503))
        with pytest.raises(BackendError):
            await chats.answer(chat_id, "one-off")  # an unstored answer's failure counts
        calls = len(fake_llm.requests)
        refused: list[Callable[[], Awaitable[object]]] = [
            lambda: chats.send(chat_id, "hello?"), lambda: chats.answer(chat_id, "hello?"),
            lambda: chats.answer(None, "hello?"),
            lambda: chats.complete([{"role": "user", "content": "hello?"}])]
        for call in refused:
            with pytest.raises(BackendUnavailable):
                await call()
        async with aclosing(chats.stream_complete([{"role": "user", "content": "x"}])) as it:
            with pytest.raises(BackendUnavailable):
                await anext(it)
        assert len(fake_llm.requests) == calls  # the backend was not called
        circuit = chats._runtime.models.circuit("openai")
        assert circuit.failures == 1  # the refusals did not count


@pytest.fixture
def fragile_http(settings_kwargs: dict[str, object]) -> Iterator[httpx.Client]:
    """The live service with a circuit that opens on the first failure."""
    from chatsessions.config import Settings
    from chatsessions.service import create_app

    settings = Settings(**{**settings_kwargs, "circuit_failures": 1,  # type: ignore[arg-type]
                           "circuit_cooldown": 60.0})
    server = LiveServer(create_app(settings)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


def test_an_open_circuit_refuses_store_false_and_completions_over_http(
    fragile_http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    chat = fragile_http.post("/chats", json={}).json()
    fake_llm.inject(Fault.status(503))
    failed = fragile_http.post(f"/chats/{chat['id']}/messages", json={"content": "hi"})
    assert failed.status_code == 502, failed.text
    calls = len(fake_llm.requests)
    turn = fragile_http.post(f"/chats/{chat['id']}/messages", json={"content": "hi"})
    loose = fragile_http.post("/v1/responses", json={
        "model": "fake-model", "input": "hi", "conversation": chat["id"], "store": False})
    streamed = fragile_http.post("/v1/responses", json={
        "model": "fake-model", "input": "hi", "store": False, "stream": True})
    completion = fragile_http.post("/v1/chat/completions", json={
        "model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
    for refused in (turn, loose, streamed, completion):
        assert refused.status_code == 503, refused.text
    assert len(fake_llm.requests) == calls  # the model was not called
