"""Server-Sent Events framing, and the response that streams them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

#: what every event stream answers with: no caching, no buffering by a proxy
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(name: str, data: Any, id_: str | None = None) -> bytes:
    """One event; ``id_`` is what a client sends back as ``Last-Event-ID`` to resume."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {name}\ndata: {payload}\n\n".encode()


def wants_stream(accept: str | None, flag: bool) -> bool:
    return flag or "text/event-stream" in (accept or "")


class EventStream(StreamingResponse):
    """``text/event-stream``, its first chunk sent with the headers by the request's own
    task when ``first_ready`` (the events start with one made without waiting).
    Starlette's response starts a task of its own to send anything: another turn of the
    event loop, while a turn in full flow takes its share of it, before the first event,
    the one a client waits for, can leave. The rest is streamed as Starlette streams it,
    stopping when the client goes away (a first event that is waited for is sent that
    way too, so a client leaving meanwhile is seen at once)."""

    def __init__(self, events: AsyncIterable[bytes], *, first_ready: bool = True) -> None:
        super().__init__(events, media_type="text/event-stream", headers=HEADERS)
        self._events: AsyncIterator[bytes] = aiter(events)
        self._first_ready = first_ready
        self._opened = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._first_ready:
            first = await anext(self._events, None)
            try:
                await self._open(send)
                if first is not None:
                    await send({"type": "http.response.body", "body": first,
                                "more_body": True})
            except OSError:  # as Starlette reports a client gone while it sends
                raise ClientDisconnect() from None
        await super().__call__(scope, receive, send)

    async def _open(self, send: Send) -> None:
        self._opened = True
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})

    async def stream_response(self, send: Send) -> None:
        if not self._opened:
            await self._open(send)
        async for chunk in self._events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
