"""ChatSessions: the tutorial's synchronous API over AsyncChatSessions.

The logic is written once, async; this facade only runs it on a private event-loop thread
(as httpx and openai keep their sync twins thin), so it is safe to call from any thread.
Each method is the exact twin of the async one: same name, parameters and docstring (a
test compares the two classes), so a wrong keyword fails at the call, as it would there.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures.thread  # noqa: F401  (its exit hook first: see _close_at_exit)
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from chatsessions._sessions.core import _UNSET
from chatsessions.backends import Backend
from chatsessions.config import Settings
from chatsessions.engine.content import PartSpec
from chatsessions.engine.structured import FormatSpec
from chatsessions.engine.titles import TITLE_GRACE
from chatsessions.engine.tools import ToolSpec
from chatsessions.keys import ApiKeys
from chatsessions.runs import Runs
from chatsessions.sessions import AsyncChatSessions
from chatsessions.store import Store
from chatsessions.types import (
    Chat,
    Completion,
    ContextPolicy,
    GenerationParams,
    Message,
    Role,
    SearchHit,
    ToolCall,
    ToolCallDelta,
    UsageReport,
)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _twin(async_method: Callable[..., Any]) -> Callable[[F], F]:
    """Give a sync method its async twin's docstring: written once, the same in help()."""

    def give(method: F) -> F:
        method.__doc__ = async_method.__doc__
        return method

    return give


class ChatSessions:
    """Many durable conversations with a model, the tutorial's way.

    >>> chats = ChatSessions()
    >>> chat_id = chats.create_chat()
    >>> print(chats.send_message(chat_id, "Can you help me track my order?"))

    :meth:`close` (or a ``with`` block) ends it; a script that never calls it loses nothing:
    the store is closed as the interpreter exits.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        backend: Backend | str | None = None,
        tenant_id: str = "default",
        **overrides: Any,
    ) -> None:
        self.aio = AsyncChatSessions(settings, store=store, backend=backend,
                                     tenant_id=tenant_id, **overrides)
        self._runner = _LoopThread(self.aio)
        try:
            self._runner.call(self.aio.open())
        except BaseException:
            self._runner.close()
            raise

    @classmethod
    def _view(cls, runner: _LoopThread, aio: AsyncChatSessions) -> ChatSessions:
        """Another tenant's facade on the same loop thread (see :meth:`for_tenant`)."""
        view = cls.__new__(cls)
        view.aio, view._runner = aio, runner
        return view

    @property
    def settings(self) -> Settings:
        return self.aio.settings

    @property
    def tenant_id(self) -> str:
        return self.aio.tenant_id

    def __enter__(self) -> ChatSessions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # the API, twin of AsyncChatSessions's --------------------------------------------

    @_twin(AsyncChatSessions.for_tenant)
    def for_tenant(self, tenant_id: str) -> ChatSessions:
        # Shares the loop thread, the runtime and the store: closing any view closes all.
        return self._view(self._runner, self.aio.for_tenant(tenant_id))

    @_twin(AsyncChatSessions.open)
    def open(self) -> None:
        self._runner.call(self.aio.open())

    @_twin(AsyncChatSessions.close)
    def close(self, *, title_grace: float = TITLE_GRACE) -> None:
        self._runner.close(title_grace)

    @_twin(AsyncChatSessions.create_chat)
    def create_chat(
        self,
        system_prompt: str | None = None,
        *,
        model: str | None = None,
        backend: str | None = None,
        params: GenerationParams | dict[str, Any] | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        chat_id: str | None = None,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        context_policy: ContextPolicy | str = ContextPolicy.TRIM,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
    ) -> str:
        return self._runner.call(self.aio.create_chat(
            system_prompt, model=model, backend=backend, params=params, title=title,
            metadata=metadata, chat_id=chat_id, idempotency_key=idempotency_key,
            expires_at=expires_at, context_policy=context_policy, tools=tools,
            tool_choice=tool_choice))

    @_twin(AsyncChatSessions.get_chat)
    def get_chat(self, chat_id: str) -> Chat:
        return self._runner.call(self.aio.get_chat(chat_id))

    @_twin(AsyncChatSessions.list_chats)
    def list_chats(
        self,
        *,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
        title_contains: str | None = None,
        metadata: dict[str, Any] | None = None,
        include_archived: bool = False,
        archived: bool | None = None,
    ) -> list[Chat]:
        return self._runner.call(self.aio.list_chats(
            limit=limit, before=before, title_contains=title_contains, metadata=metadata,
            include_archived=include_archived, archived=archived))

    @_twin(AsyncChatSessions.update_chat)
    def update_chat(
        self,
        chat_id: str,
        *,
        title: str | None = _UNSET,
        system_prompt: str = _UNSET,
        model: str = _UNSET,
        params: GenerationParams | dict[str, Any] = _UNSET,
        metadata: dict[str, Any] = _UNSET,
        expires_at: datetime | None = _UNSET,
        context_policy: ContextPolicy | str = _UNSET,
        tools: Sequence[ToolSpec] | None = _UNSET,
        tool_choice: str | None = _UNSET,
    ) -> Chat:
        return self._runner.call(self.aio.update_chat(
            chat_id, title=title, system_prompt=system_prompt, model=model, params=params,
            metadata=metadata, expires_at=expires_at, context_policy=context_policy,
            tools=tools, tool_choice=tool_choice))

    @_twin(AsyncChatSessions.delete_chat)
    def delete_chat(self, chat_id: str) -> None:
        self._runner.call(self.aio.delete_chat(chat_id))

    @_twin(AsyncChatSessions.archive_chat)
    def archive_chat(self, chat_id: str) -> Chat:
        return self._runner.call(self.aio.archive_chat(chat_id))

    @_twin(AsyncChatSessions.unarchive_chat)
    def unarchive_chat(self, chat_id: str) -> Chat:
        return self._runner.call(self.aio.unarchive_chat(chat_id))

    @_twin(AsyncChatSessions.history)
    def history(
        self, chat_id: str, *, include_failed: bool = False, include_replaced: bool = False
    ) -> list[Message]:
        return self._runner.call(self.aio.history(
            chat_id, include_failed=include_failed, include_replaced=include_replaced))

    @_twin(AsyncChatSessions.send)
    def send(
        self,
        chat_id: str,
        text: str | Sequence[PartSpec],
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
        if_message_count: int | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        max_tool_rounds: int | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Message:
        return self._runner.call(self.aio.send(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            max_tool_rounds=max_tool_rounds, response_format=response_format,
            context_policy=context_policy))

    @_twin(AsyncChatSessions.send_message)
    def send_message(
        self,
        chat_id: str,
        text: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
        if_message_count: int | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        max_tool_rounds: int | None = None,
    ) -> str:
        return self._runner.call(self.aio.send_message(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            max_tool_rounds=max_tool_rounds))

    @_twin(AsyncChatSessions.stream)
    def stream(
        self,
        chat_id: str,
        text: str | Sequence[PartSpec],
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
        if_message_count: int | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        max_tool_rounds: int | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Iterator[str | ToolCallDelta | Message]:
        return self._runner.iterate(self.aio.stream(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            max_tool_rounds=max_tool_rounds, response_format=response_format,
            context_policy=context_policy))

    @_twin(AsyncChatSessions.stream_message)
    def stream_message(
        self,
        chat_id: str,
        text: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
        if_message_count: int | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        max_tool_rounds: int | None = None,
    ) -> Iterator[str]:
        return self._runner.iterate(self.aio.stream_message(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            max_tool_rounds=max_tool_rounds))

    @_twin(AsyncChatSessions.send_tool_results)
    def send_tool_results(
        self,
        chat_id: str,
        results: Mapping[str, str],
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        idempotency_key: str | None = None,
        max_tool_rounds: int | None = None,
        system_prompt: str | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Message:
        return self._runner.call(self.aio.send_tool_results(
            chat_id, results, params=params, tools=tools, tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls, idempotency_key=idempotency_key,
            max_tool_rounds=max_tool_rounds, system_prompt=system_prompt,
            response_format=response_format, context_policy=context_policy))

    @_twin(AsyncChatSessions.stream_tool_results)
    def stream_tool_results(
        self,
        chat_id: str,
        results: Mapping[str, str],
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        idempotency_key: str | None = None,
        max_tool_rounds: int | None = None,
        system_prompt: str | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Iterator[str | ToolCallDelta | Message]:
        return self._runner.iterate(self.aio.stream_tool_results(
            chat_id, results, params=params, tools=tools, tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls, idempotency_key=idempotency_key,
            max_tool_rounds=max_tool_rounds, system_prompt=system_prompt,
            response_format=response_format, context_policy=context_policy))

    @_twin(AsyncChatSessions.pending_tool_calls)
    def pending_tool_calls(self, chat_id: str) -> list[ToolCall]:
        return self._runner.call(self.aio.pending_tool_calls(chat_id))

    @_twin(AsyncChatSessions.cancel_tool_calls)
    def cancel_tool_calls(
        self, chat_id: str, call_ids: Sequence[str] | None = None
    ) -> list[ToolCall]:
        return self._runner.call(self.aio.cancel_tool_calls(chat_id, call_ids))

    @_twin(AsyncChatSessions.retry)
    def retry(
        self,
        chat_id: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
    ) -> Message:
        return self._runner.call(self.aio.retry(
            chat_id, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt))

    @_twin(AsyncChatSessions.stream_retry)
    def stream_retry(
        self,
        chat_id: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
    ) -> Iterator[str | ToolCallDelta | Message]:
        return self._runner.iterate(self.aio.stream_retry(
            chat_id, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt))

    @_twin(AsyncChatSessions.regenerate)
    def regenerate(
        self, chat_id: str, *, params: GenerationParams | dict[str, Any] | None = None
    ) -> Message:
        return self._runner.call(self.aio.regenerate(chat_id, params=params))

    @_twin(AsyncChatSessions.stream_regenerate)
    def stream_regenerate(
        self, chat_id: str, *, params: GenerationParams | dict[str, Any] | None = None
    ) -> Iterator[str | ToolCallDelta | Message]:
        return self._runner.iterate(self.aio.stream_regenerate(chat_id, params=params))

    @_twin(AsyncChatSessions.answer)
    def answer(
        self,
        chat_id: str | None,
        text: str | Sequence[PartSpec],
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        system_prompt: str | None = None,
        model: str | None = None,
        prior: Sequence[tuple[Role, str]] = (),
        up_to_seq: int | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Message:
        return self._runner.call(self.aio.answer(
            chat_id, text, params=params, system_prompt=system_prompt, model=model,
            prior=prior, up_to_seq=up_to_seq, response_format=response_format,
            context_policy=context_policy))

    @_twin(AsyncChatSessions.stream_answer)
    def stream_answer(
        self,
        chat_id: str | None,
        text: str | Sequence[PartSpec],
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        system_prompt: str | None = None,
        model: str | None = None,
        prior: Sequence[tuple[Role, str]] = (),
        up_to_seq: int | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Iterator[str | Message]:
        return self._runner.iterate(self.aio.stream_answer(
            chat_id, text, params=params, system_prompt=system_prompt, model=model,
            prior=prior, up_to_seq=up_to_seq, response_format=response_format,
            context_policy=context_policy))

    @_twin(AsyncChatSessions.complete)
    def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        backend: str | None = None,
        params: GenerationParams | dict[str, Any] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: FormatSpec | None = None,
    ) -> Completion:
        return self._runner.call(self.aio.complete(
            messages, model=model, backend=backend, params=params, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            response_format=response_format))

    @_twin(AsyncChatSessions.stream_complete)
    def stream_complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        backend: str | None = None,
        params: GenerationParams | dict[str, Any] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: FormatSpec | None = None,
    ) -> Iterator[str | ToolCallDelta | Completion]:
        return self._runner.iterate(self.aio.stream_complete(
            messages, model=model, backend=backend, params=params, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            response_format=response_format))

    @_twin(AsyncChatSessions.edit_message)
    def edit_message(
        self, chat_id: str, seq: int, text: str, *,
        params: GenerationParams | dict[str, Any] | None = None,
    ) -> tuple[str, Message]:
        return self._runner.call(self.aio.edit_message(chat_id, seq, text, params=params))

    @_twin(AsyncChatSessions.sweep)
    def sweep(self) -> int:
        return self._runner.call(self.aio.sweep())

    @_twin(AsyncChatSessions.lead_sweeps)
    def lead_sweeps(self) -> bool:
        return self._runner.call(self.aio.lead_sweeps())

    @_twin(AsyncChatSessions.usage)
    def usage(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> UsageReport:
        return self._runner.call(self.aio.usage(start, end))

    @_twin(AsyncChatSessions.search)
    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        return self._runner.call(self.aio.search(query, limit))

    @_twin(AsyncChatSessions.export_chat)
    def export_chat(self, chat_id: str) -> dict[str, Any]:
        return self._runner.call(self.aio.export_chat(chat_id))

    @_twin(AsyncChatSessions.import_chat)
    def import_chat(self, data: Any, *, keep_id: bool = False) -> str:
        return self._runner.call(self.aio.import_chat(data, keep_id=keep_id))

    @_twin(AsyncChatSessions.get_backend)
    def get_backend(self, name: str | None = None) -> Backend:
        # Made on the loop thread: a backend's first use builds its client there.
        return self._runner.call(_returning(self.aio.get_backend, name))

    @_twin(AsyncChatSessions.append_messages)
    def append_messages(
        self, chat_id: str, messages: Sequence[tuple[Role, str] | Mapping[str, Any]]
    ) -> list[Message]:
        return self._runner.call(self.aio.append_messages(chat_id, messages))

    @_twin(AsyncChatSessions.delete_message)
    def delete_message(self, chat_id: str, seq: int) -> bool:
        return self._runner.call(self.aio.delete_message(chat_id, seq))

    @_twin(AsyncChatSessions.fork_chat)
    def fork_chat(self, chat_id: str, *, up_to_seq: int | None = None) -> str:
        return self._runner.call(self.aio.fork_chat(chat_id, up_to_seq=up_to_seq))

    # reading for the service and the CLI: pages, health, keys, markdown ---------------

    @property
    def keys(self) -> ApiKeys:
        """API keys as a resource (every tenant's): create, list, revoke, verify."""
        return ApiKeys(self.aio.keys, self._runner.call)

    @property
    @_twin(AsyncChatSessions.runs.fget)  # type: ignore[attr-defined]
    def runs(self) -> Runs:
        return Runs(self.aio.runs, self._runner)

    @_twin(AsyncChatSessions.messages)
    def messages(
        self, chat_id: str, *, after_seq: int = 0, limit: int | None = 100
    ) -> list[Message]:
        return self._runner.call(self.aio.messages(chat_id, after_seq=after_seq, limit=limit))

    @_twin(AsyncChatSessions.get_message)
    def get_message(self, chat_id: str, seq: int) -> Message | None:
        return self._runner.call(self.aio.get_message(chat_id, seq))

    @_twin(AsyncChatSessions.ping)
    def ping(self) -> None:
        self._runner.call(self.aio.ping())

    @_twin(AsyncChatSessions.export_markdown)
    def export_markdown(self, chat_id: str) -> str:
        return self._runner.call(self.aio.export_markdown(chat_id))


async def _returning(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


class _LoopThread:
    """The facade's private event loop on a daemon thread, shared with its tenant views.

    It closes the sessions when closed, when the last facade using it is collected, or as
    the interpreter exits, whichever comes first (once)."""

    def __init__(self, aio: AsyncChatSessions) -> None:
        self.loop = _private_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="chatsessions-loop", daemon=True)
        self._thread.start()
        self.closed = False
        self._finalizer = weakref.finalize(self, _shutdown, aio, self.loop, self._thread)
        self._finalizer.atexit = False  # too late then: see _close_at_exit
        _close_at_exit(self._finalizer)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.closed:
            coro.close()
            raise RuntimeError("this ChatSessions is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.call(agen.__anext__())  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and not self.closed:
                self.call(aclose())

    def close(self, title_grace: float = TITLE_GRACE) -> None:
        if self.closed:
            return
        self.closed = True
        with _live_lock:
            _live.discard(self._finalizer)
        # Detached rather than called: this close chooses its own title grace.
        detached = self._finalizer.detach()
        if detached is not None:
            aio, loop, thread = detached[2]
            _shutdown(aio, loop, thread, title_grace)


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
    aio: AsyncChatSessions,
    loop: asyncio.AbstractEventLoop,
    thread: threading.Thread,
    title_grace: float = TITLE_GRACE,
) -> None:
    if loop.is_closed():
        return
    try:
        asyncio.run_coroutine_threadsafe(aio.close(title_grace=title_grace), loop).result(
            timeout=title_grace + 10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


#: finalizers of the facades still open, closed by _close_all as the interpreter exits
_live: set[weakref.finalize[Any, Any]] = set()
_live_lock = threading.Lock()
_hooked = False


def _close_at_exit(finalizer: weakref.finalize[Any, Any]) -> None:
    """Close the facade as the interpreter exits, while its store can still be closed.

    ``atexit`` is too late: by then the interpreter has shut down ``concurrent.futures``
    (the store's database threads, the default executor), and closing would fail with
    "cannot schedule new futures after interpreter shutdown", a pending title lost with it.
    ``threading``'s exit hooks run earlier, last registered first; ``concurrent.futures``
    uses the same hook, registered when it is imported (at the top of this module), so
    ours, registered later, runs before it."""
    global _hooked
    with _live_lock:
        for dead in [f for f in _live if not f.alive]:
            _live.discard(dead)
        _live.add(finalizer)
        if not _hooked:
            register = getattr(threading, "_register_atexit", atexit.register)
            register(_close_all)
            _hooked = True


def _close_all() -> None:
    with _live_lock:
        pending = list(_live)
        _live.clear()
    for finalizer in pending:
        finalizer()
