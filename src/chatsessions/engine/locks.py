"""Per-chat turn serialization inside one process.

asyncio.Lock is FIFO-fair, so concurrent sends to one chat run in arrival order; a bounded
wait turns a stuck chat into ``ChatBusy`` instead of an ever-growing queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chatsessions.errors import ChatBusy


class ChatLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, chat_id: str, wait: float) -> AsyncIterator[None]:
        lock, users = self._locks.get(chat_id, (asyncio.Lock(), 0))
        self._locks[chat_id] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout(wait):  # a timer, not wait_for's task per call
                    await lock.acquire()
            except TimeoutError:
                raise ChatBusy(chat_id, retry_after=min(wait, 5.0) or 1.0) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[chat_id]
            if users <= 1:
                del self._locks[chat_id]
            else:
                self._locks[chat_id] = (lock, users - 1)
