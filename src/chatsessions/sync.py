"""ChatSessions: the tutorial's synchronous API over AsyncChatSessions.

The logic is written once, async; this facade only runs it on a private event-loop thread
(as httpx and openai keep their sync twins thin), so it is safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from datetime import datetime
from typing import Any, TypeVar

from chatsessions.config import Settings
from chatsessions.keys import ApiKeys
from chatsessions.sessions import AsyncChatSessions
from chatsessions.types import Chat, Message, SearchHit, UsageReport

T = TypeVar("T")


class ChatSessions:
    """Many durable conversations with a model, the tutorial's way.

    >>> chats = ChatSessions()
    >>> chat_id = chats.create_chat()
    >>> print(chats.send_message(chat_id, "Can you help me track my order?"))
    """

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._loop = _private_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="chatsessions-loop", daemon=True
        )
        self._thread.start()
        self._closed = False
        self.aio = AsyncChatSessions(settings, **kwargs)
        self._call(self.aio.open())
        # Close the store at exit so database threads and connections end cleanly.
        self._finalizer = weakref.finalize(self, _shutdown, self.aio, self._loop, self._thread)
        atexit.register(self._finalizer)

    @property
    def settings(self) -> Settings:
        return self.aio.settings

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this ChatSessions is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._call(agen.__anext__())  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and not self._closed:
                self._call(aclose())

    def close(self) -> None:
        if not self._closed:
            self._finalizer()
            self._closed = True

    def __enter__(self) -> ChatSessions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # the API, mirroring AsyncChatSessions ----------------------------------------

    def create_chat(self, system_prompt: str | None = None, **kwargs: Any) -> str:
        return self._call(self.aio.create_chat(system_prompt, **kwargs))

    def send_message(self, chat_id: str, text: str, **kwargs: Any) -> str:
        return self._call(self.aio.send_message(chat_id, text, **kwargs))

    def send(self, chat_id: str, text: str, **kwargs: Any) -> Message:
        return self._call(self.aio.send(chat_id, text, **kwargs))

    def stream_message(self, chat_id: str, text: str, **kwargs: Any) -> Iterator[str]:
        return self._iterate(self.aio.stream_message(chat_id, text, **kwargs))

    def stream(self, chat_id: str, text: str, **kwargs: Any) -> Iterator[str | Message]:
        return self._iterate(self.aio.stream(chat_id, text, **kwargs))

    def retry(self, chat_id: str, **kwargs: Any) -> Message:
        return self._call(self.aio.retry(chat_id, **kwargs))

    def stream_retry(self, chat_id: str, **kwargs: Any) -> Iterator[str | Message]:
        return self._iterate(self.aio.stream_retry(chat_id, **kwargs))

    def regenerate(self, chat_id: str, **kwargs: Any) -> Message:
        return self._call(self.aio.regenerate(chat_id, **kwargs))

    def stream_regenerate(self, chat_id: str, **kwargs: Any) -> Iterator[str | Message]:
        return self._iterate(self.aio.stream_regenerate(chat_id, **kwargs))

    def edit_message(self, chat_id: str, seq: int, text: str,
                     **kwargs: Any) -> tuple[str, Message]:
        return self._call(self.aio.edit_message(chat_id, seq, text, **kwargs))

    def fork_chat(self, chat_id: str, *, up_to_seq: int | None = None) -> str:
        return self._call(self.aio.fork_chat(chat_id, up_to_seq=up_to_seq))

    def get_chat(self, chat_id: str) -> Chat:
        return self._call(self.aio.get_chat(chat_id))

    def list_chats(
        self, *, limit: int = 100, before: tuple[datetime, str] | None = None, **kwargs: Any
    ) -> list[Chat]:
        return self._call(self.aio.list_chats(limit=limit, before=before, **kwargs))

    def update_chat(self, chat_id: str, **changes: Any) -> Chat:
        return self._call(self.aio.update_chat(chat_id, **changes))

    def delete_chat(self, chat_id: str) -> None:
        self._call(self.aio.delete_chat(chat_id))

    def history(self, chat_id: str, *, include_failed: bool = False,
                include_replaced: bool = False) -> list[Message]:
        return self._call(self.aio.history(chat_id, include_failed=include_failed,
                                           include_replaced=include_replaced))

    def archive_chat(self, chat_id: str) -> Chat:
        return self._call(self.aio.archive_chat(chat_id))

    def unarchive_chat(self, chat_id: str) -> Chat:
        return self._call(self.aio.unarchive_chat(chat_id))

    def usage(self, start: datetime | None = None, end: datetime | None = None) -> UsageReport:
        return self._call(self.aio.usage(start, end))

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        return self._call(self.aio.search(query, limit))

    def sweep(self) -> int:
        return self._call(self.aio.sweep())

    def export_chat(self, chat_id: str) -> dict[str, Any]:
        return self._call(self.aio.export_chat(chat_id))

    def import_chat(self, data: Any, *, keep_id: bool = False) -> str:
        return self._call(self.aio.import_chat(data, keep_id=keep_id))

    # reading for the service and the CLI: pages, health, keys, markdown ---------------

    @property
    def keys(self) -> ApiKeys:
        """API keys as a resource (every tenant's): create, list, revoke, verify."""
        return ApiKeys(self.aio.keys, self._call)

    def messages(
        self, chat_id: str, *, after_seq: int = 0, limit: int | None = 100
    ) -> list[Message]:
        """One page of the stored messages, whatever their status: those with seq above
        ``after_seq``, in order, at most ``limit`` (None: all). The next page starts after
        the last seq returned. The system prompt is the chat's field, not a message here."""
        return self._call(self.aio.messages(chat_id, after_seq=after_seq, limit=limit))

    def get_message(self, chat_id: str, seq: int) -> Message | None:
        """The stored message ``seq`` (1 and up) of the chat, whatever its status; None if
        there is none (never was, or deleted)."""
        return self._call(self.aio.get_message(chat_id, seq))

    def ping(self) -> None:
        """A health check: return once the database has answered a trivial query; raise
        (the driver's error) if it cannot."""
        self._call(self.aio.ping())

    def export_markdown(self, chat_id: str) -> str:
        """The chat as Markdown for reading (every stored message, failed turns and earlier
        answers marked); :meth:`export_chat` is the lossless form."""
        return self._call(self.aio.export_markdown(chat_id))


def _private_loop() -> asyncio.AbstractEventLoop:
    """The facade's own loop: uvloop's where it is installed (it comes with the service's
    ``uvicorn[standard]``; each call's hand-over to the loop thread and the model call's
    I/O cost less), else asyncio's. Nothing else runs on it, so the choice is ours."""
    try:
        import uvloop
    except ImportError:  # a platform uvloop does not support
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _shutdown(
    aio: AsyncChatSessions, loop: asyncio.AbstractEventLoop, thread: threading.Thread
) -> None:
    if loop.is_closed():
        return
    try:
        asyncio.run_coroutine_threadsafe(aio.close(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
