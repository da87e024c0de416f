"""Turns in flight (``engine/live.py``): a reader is handed each delta as the turn yields
it, even when the model's whole answer is already there to be read."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from chatsessions.engine.live import LiveTurns
from chatsessions.types import Message


async def test_the_first_delta_reaches_a_reader_before_the_turn_runs_on() -> None:
    """A model that answers all at once (a fast server, a short answer) gives the turn
    nothing to wait for between deltas: the reader must still get the first one while
    the turn goes on, not once it has stored its answer."""
    async def turn() -> AsyncGenerator[str | Message, None]:
        for word in ("one ", "two ", "three"):
            yield word  # each delta ready at once: no wait in between

    async def answer_seq(first: object) -> int:
        return 2

    log = LiveTurns().start(turn(), "chat", answer_seq)
    await log.started()
    assert log.items[:1] == ["one "]
    assert not log.done  # the turn is still running when its first delta is read
    assert log.task is not None
    await log.task
    assert log.items == ["one ", "two ", "three"]
    assert log.done
    assert log.error is None
