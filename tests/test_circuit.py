"""The circuit breaker as a table of events, then against a failing real HTTP backend."""

from __future__ import annotations

import pytest

from chatsessions import AsyncChatSessions, BackendError, BackendUnavailable
from chatsessions.engine.circuit import CircuitBreaker, counts_as_outage
from chatsessions.testing import FakeLLMServer, Fault


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
