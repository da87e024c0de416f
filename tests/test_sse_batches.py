"""The Responses API's events leave in batches: those ready before the next wait for the
model are one chunk of the body (one write), so the first delta goes out with the opening
events instead of after four writes of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from chatsessions.service.openai_compat.streaming import joined, response_events
from chatsessions.types import Completion, StreamItem, Usage


def kinds(chunk: bytes) -> list[str]:
    return [line.removeprefix("event: ") for line in chunk.decode().splitlines()
            if line.startswith("event: ")]


async def test_the_first_delta_leaves_with_the_opening_events_then_one_chunk_per_wait(
) -> None:
    async def rest() -> AsyncIterator[StreamItem]:
        yield "world"
        yield Completion("hello world", Usage(3, 2), "fake-model", "stop")

    def snapshot(status: str, *_: Any) -> dict[str, Any]:
        return {"status": status}

    chunks = [chunk async for chunk in joined(response_events("b", "hello ", rest(), snapshot))]
    assert [kinds(chunk) for chunk in chunks] == [
        ["response.created", "response.in_progress", "response.output_item.added",
         "response.content_part.added", "response.output_text.delta"],
        ["response.output_text.delta"],
        ["response.output_text.done", "response.content_part.done",
         "response.output_item.done", "response.completed"],
    ]
