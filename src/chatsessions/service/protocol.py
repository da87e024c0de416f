"""The HTTP protocol ``chatsessions serve`` runs: uvicorn's (httptools), with a response's
head sent in the same write as its first body chunk.

uvicorn writes the status line and headers as soon as the application starts a response,
then each body chunk as it comes: before the first byte a client waits for (a stream's
first event, an answer's JSON) it is woken, and the server pays a send, twice. Held back
while the application goes on without waiting (as it does when that chunk is ready), the
head leaves with it: one write, one packet. Nothing else changes: the bytes are the same,
in the same order, and a head is held at most until the event loop's next turn (a stream
whose first event is waited for sends its head then, as before).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: the interim response uvicorn writes before the body is read; it is not held
CONTINUE = b"HTTP/1.1 100 "


class HeadWithBody:
    """A response's view of its connection: its first write (the head) waits for the
    next one, made before the event loop's next turn, to go out with it."""

    __slots__ = ("_head", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started and not data.startswith(CONTINUE):
            self._started = True
            self._head = data
            self._loop.call_soon(self.flush)
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        self._transport.write(data)

    def flush(self) -> None:
        """Send a head still held (its body was not ready at once)."""
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadWithBodyProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each response written through :class:`HeadWithBody`."""

    def on_headers_complete(self) -> None:
        # uvicorn's insides: should a release rename them, responses go out unwrapped
        # (two writes, as plain uvicorn sends them), never fail
        before = getattr(self, "cycle", None)
        super().on_headers_complete()
        cycle = getattr(self, "cycle", None)
        if cycle is not None and cycle is not before and hasattr(cycle, "transport"):
            cycle.transport = HeadWithBody(self.transport, self.loop)


def http_protocol() -> str:
    """What ``uvicorn.run(http=...)`` is given: this protocol, or uvicorn's choice where
    httptools is missing."""
    if importlib.util.find_spec("httptools") is None:
        return "auto"
    return f"{__name__}:{HeadWithBodyProtocol.__name__}"
