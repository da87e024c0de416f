"""Server-Sent Events framing."""

from __future__ import annotations

import json
from typing import Any


def event(name: str, data: Any, id_: str | None = None) -> bytes:
    """One event; ``id_`` is what a client sends back as ``Last-Event-ID`` to resume."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {name}\ndata: {payload}\n\n".encode()


def wants_stream(accept: str | None, flag: bool) -> bool:
    return flag or "text/event-stream" in (accept or "")
