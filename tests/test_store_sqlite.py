"""SQLite specifics: a turn's writes run on the event loop when the write lock is free, queue
on the writer thread when another connection holds it, and the log is checkpointed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from chatsessions import AsyncChatSessions
from chatsessions.store.engines import CHECKPOINT_EVERY
from chatsessions.testing import FakeLLMServer


def _settings(tmp_path: Path, fake_llm: FakeLLMServer) -> dict[str, object]:
    return {"database_url": f"sqlite:///{tmp_path / 'chats.db'}", "backend": "openai",
            "openai_base_url": fake_llm.base_url, "auto_title": False}


async def test_a_turn_waits_for_a_write_lock_another_connection_holds(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    async with AsyncChatSessions(**_settings(tmp_path, fake_llm)) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        await chats.send_message(chat_id, "first")
        other = sqlite3.connect(tmp_path / "chats.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing, say
        turn = asyncio.ensure_future(chats.send_message(chat_id, "second"))
        await asyncio.sleep(0.3)
        assert not turn.done()  # waiting for the lock, not failed
        other.execute("ROLLBACK")
        other.close()
        assert await asyncio.wait_for(turn, 10)
        history = await chats.history(chat_id)
        assert [m.content for m in history[1::2]] == ["first", "second"]


async def test_the_write_ahead_log_stays_bounded(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    """The turn's connection never checkpoints by itself; without the periodic checkpoint
    the log would grow by every page every commit wrote (about 40 KB a turn)."""
    wal = tmp_path / "chats.db-wal"
    async with AsyncChatSessions(**_settings(tmp_path, fake_llm)) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        sizes = []
        for n in range(4 * CHECKPOINT_EVERY):
            await chats.send_message(chat_id, f"message {n}")
            if n % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                sizes.append(wal.stat().st_size)
        assert len(await chats.history(chat_id)) == 1 + 8 * CHECKPOINT_EVERY
    assert max(sizes[1:]) <= sizes[0] * 1.5, sizes
