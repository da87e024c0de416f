"""Server-Sent Events framing."""

from __future__ import annotations

import json
from typing import Any


def event(name: str, data: Any) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {name}\ndata: {payload}\n\n".encode()


def wants_stream(accept: str | None, flag: bool) -> bool:
    return flag or "text/event-stream" in (accept or "")
