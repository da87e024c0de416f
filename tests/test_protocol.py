"""The server protocol of ``chatsessions serve`` (``service/protocol.py``): a response's
head leaves in one write with the body that follows it at once, and on its own at the
event loop's next turn when the body is not ready; the bytes never change. (Every HTTP
test of the service runs through it too: the test server is configured as ``serve``.)"""

from __future__ import annotations

import asyncio

from chatsessions.service.protocol import HeadWithBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"


class Wire:
    """Stands for the connection: the writes made on it, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_the_head_leaves_with_the_body_written_right_after_it() -> None:
    wire = Wire()
    response = HeadWithBody(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
    response.write(HEAD)
    response.write(b"event: delta\n\n")
    response.write(b"event: done\n\n")
    await asyncio.sleep(0)
    assert wire.writes == [HEAD + b"event: delta\n\n", b"event: done\n\n"]


async def test_a_head_whose_body_is_not_ready_leaves_at_the_next_turn_of_the_loop() -> None:
    wire = Wire()
    response = HeadWithBody(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
    response.write(HEAD)
    assert wire.writes == []
    await asyncio.sleep(0)
    assert wire.writes == [HEAD]
    response.write(b"event: delta\n\n")
    assert wire.writes == [HEAD, b"event: delta\n\n"]


async def test_an_interim_continue_is_not_held_and_a_close_sends_the_head_first() -> None:
    wire = Wire()
    response = HeadWithBody(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
    response.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert wire.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    response.write(HEAD)
    response.close()
    assert wire.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", HEAD]
    assert wire.closed
    await asyncio.sleep(0)
    assert len(wire.writes) == 2  # sent once
