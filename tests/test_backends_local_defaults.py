"""The embedded model's shipped defaults keep a small model from looping: the demo's four
turns (two chats, two turns each) end by the model's own choice, without a repeated
sentence, where the earlier defaults had the second chat repeat one paragraph until the
token limit."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from chatsessions import AsyncChatSessions
from chatsessions.prompts import DEMO_CHATS

pytestmark = pytest.mark.local_model


def repeated_sentence(text: str, *, min_chars: int = 30, times: int = 3) -> str | None:
    """A sentence (or line) of at least ``min_chars`` that occurs ``times`` times or more."""
    pieces = (p.strip() for p in re.split(r"(?<=[.!?])\s+|\n+", text))
    counts = Counter(p for p in pieces if len(p) >= min_chars)
    return next((p for p, n in counts.most_common(1) if n >= times), None)


def test_the_loop_detector_sees_a_loop() -> None:
    paragraph = "We offer a free upgrade to every member this month. Just ask us how."
    assert repeated_sentence(" ".join([paragraph] * 3)) == paragraph.split(". ")[0] + "."
    assert repeated_sentence("\n".join([paragraph] * 2)) is None
    assert repeated_sentence("Short. Short. Short.") is None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [3, 8])
async def test_the_demo_chats_end_without_looping(tmp_path: Path, seed: int) -> None:
    async with AsyncChatSessions(database_url=f"sqlite:///{tmp_path / 'c.db'}",
                                 auto_title=False) as chats:
        for number, turns in enumerate(DEMO_CHATS):
            chat_id = await chats.create_chat(params={"seed": seed})
            for text in turns:
                started = time.perf_counter()
                answer = await chats.send(chat_id, text)
                took = time.perf_counter() - started
                print(f"chat {number + 1}: {len(answer.content)} chars, "
                      f"{answer.completion_tokens} tokens, {took:.1f}s")
                assert answer.content.strip()
                assert repeated_sentence(answer.content) is None, answer.content
                assert answer.completion_tokens < chats.settings.local_max_tokens, \
                    answer.content
