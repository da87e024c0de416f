"""AsyncChatSessions: the public async API and the turn algorithm (DESIGN §4)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from datetime import datetime
from typing import Any

from chatsessions.backends import Backend, Completion, make_backend
from chatsessions.cache import History, HistoryCache
from chatsessions.config import Settings
from chatsessions.context import trim_start
from chatsessions.errors import BackendError, ChatNotFound, ContextTooLong, InvalidInput
from chatsessions.locks import ChatLocks
from chatsessions.store import Store, open_store
from chatsessions.types import Chat, GenerationParams, Message, Role, TurnStatus
from chatsessions.validation import (
    MAX_TITLE_CHARS,
    check_metadata,
    check_params,
    check_text,
)

_UNSET: Any = object()
#: Tokens the chat template spends to open the assistant's answer.
_ANSWER_PRIMER_TOKENS = 3


class _Core:
    """What every tenant view of one AsyncChatSessions shares."""

    def __init__(self, settings: Settings, store: Store | None, backend: Backend | None) -> None:
        self.settings = settings
        self.store: Store = store or open_store(
            settings.database_url, synchronous=settings.sqlite_synchronous
        )
        self.backends: dict[str, Backend] = {backend.name: backend} if backend else {}
        self.default_backend = backend.name if backend else settings.backend
        self.cache = HistoryCache(settings.cache_bytes)
        self.locks = ChatLocks()
        self.opened = False
        self.open_lock = asyncio.Lock()

    def backend(self, name: str) -> Backend:
        if name not in self.backends:
            self.backends[name] = make_backend(name, self.settings)
        return self.backends[name]

    async def visible_history(self, chat: Chat) -> History:
        """The chat's ok messages, from the cache, reading only rows it has not seen."""
        entry = self.cache.get(chat.id)
        if entry is None:
            entry = History()
            entry.add(await self.store.messages(chat.id))
            self.cache.put(chat.id, entry)
        elif entry.last_seq < chat.message_count:
            rows = await self.store.messages(chat.id, after_seq=entry.last_seq)
            self.cache.grew(chat.id, entry.add(rows))
        return entry


class AsyncChatSessions:
    """Many durable conversations with a model; the async API.

    ``AsyncChatSessions()`` uses SQLite and the embedded model unless configured
    otherwise (keyword arguments take the names of :class:`Settings`). Each instance is a
    view on one tenant; :meth:`for_tenant` gives another tenant's view of the same store.
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
        if isinstance(backend, str):  # the setting's name, not a backend object
            overrides["backend"] = backend
            backend = None
        if settings is None:
            settings = Settings(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        self._core = _Core(settings, store, backend)
        self.tenant_id = tenant_id

    @property
    def settings(self) -> Settings:
        return self._core.settings

    @property
    def store(self) -> Store:
        return self._core.store

    @property
    def cache(self) -> HistoryCache:
        return self._core.cache

    def for_tenant(self, tenant_id: str) -> AsyncChatSessions:
        view = object.__new__(AsyncChatSessions)
        view._core = self._core
        view.tenant_id = tenant_id
        return view

    # lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, migrate, and fail turns a previous crash left pending."""
        async with self._core.open_lock:
            if not self._core.opened:
                await self._core.store.open()
                await self._core.store.recover_pending()
                self._core.opened = True

    async def close(self) -> None:
        async with self._core.open_lock:
            for backend in self._core.backends.values():
                await backend.aclose()
            self._core.backends.clear()
            await self._core.store.close()
            self._core.opened = False

    async def __aenter__(self) -> AsyncChatSessions:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _ready(self) -> Store:
        if not self._core.opened:
            await self.open()
        return self._core.store

    # chats ------------------------------------------------------------------------

    async def create_chat(
        self,
        system_prompt: str | None = None,
        *,
        model: str | None = None,
        backend: str | None = None,
        params: GenerationParams | dict[str, Any] | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        chat_id: str | None = None,
    ) -> str:
        """Start a chat whose history begins with the system prompt; return its id."""
        store = await self._ready()
        backend_name = backend or self._core.default_backend
        chat = Chat(
            id=chat_id or str(uuid.uuid4()),
            tenant_id=self.tenant_id,
            system_prompt=self._check_system_prompt(
                self.settings.system_prompt if system_prompt is None else system_prompt
            ),
            title=None if title is None else check_text(
                title, field="title", max_chars=MAX_TITLE_CHARS, allow_empty=True),
            backend=backend_name,
            model=model or self._core.backend(backend_name).default_model,
            params=check_params(params).as_kwargs(),
            metadata=check_metadata(metadata),
        )
        await store.create_chat(chat)
        return chat.id

    async def get_chat(self, chat_id: str) -> Chat:
        store = await self._ready()
        chat = await store.get_chat(chat_id, self.tenant_id)
        if chat is None:
            raise ChatNotFound(chat_id)
        return chat

    async def list_chats(
        self,
        *,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
        title_contains: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[Chat]:
        """Newest first; pass the last chat's ``(created_at, id)`` as ``before`` to page."""
        store = await self._ready()
        return await store.list_chats(
            self.tenant_id, limit=limit, before=before,
            title_contains=title_contains, metadata=metadata,
        )

    async def update_chat(
        self,
        chat_id: str,
        *,
        title: str | None = _UNSET,
        system_prompt: str = _UNSET,
        model: str = _UNSET,
        params: GenerationParams | dict[str, Any] = _UNSET,
        metadata: dict[str, Any] = _UNSET,
    ) -> Chat:
        store = await self._ready()
        changes: dict[str, Any] = {}
        if title is not _UNSET:
            changes["title"] = None if title is None else check_text(
                title, field="title", max_chars=MAX_TITLE_CHARS, allow_empty=True)
        if system_prompt is not _UNSET:
            changes["system_prompt"] = self._check_system_prompt(system_prompt)
        if model is not _UNSET:
            changes["model"] = check_text(model, field="model", max_chars=200)
        if params is not _UNSET:
            changes["params"] = check_params(params).as_kwargs()
        if metadata is not _UNSET:
            changes["metadata"] = check_metadata(metadata)
        if not changes:
            return await self.get_chat(chat_id)
        chat = await store.update_chat(chat_id, self.tenant_id, changes)
        if chat is None:
            raise ChatNotFound(chat_id)
        return chat

    async def delete_chat(self, chat_id: str) -> None:
        """Delete the chat and every message of it, for real."""
        store = await self._ready()
        if not await store.delete_chat(chat_id, self.tenant_id):
            raise ChatNotFound(chat_id)
        self._core.cache.discard(chat_id)

    async def history(self, chat_id: str, *, include_failed: bool = False) -> list[Message]:
        """The conversation as stored, starting with the system prompt (seq 0)."""
        chat = await self.get_chat(chat_id)
        rows = await self._core.store.messages(chat_id)
        system = Message(chat_id, 0, Role.SYSTEM, chat.system_prompt, created_at=chat.created_at)
        kept = [m for m in rows if include_failed or m.status is TurnStatus.OK]
        return [system, *kept]

    # turns ------------------------------------------------------------------------

    async def send(
        self,
        chat_id: str,
        text: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """Run one turn and return the stored assistant message (with usage)."""
        answer: Message | None = None
        turn = self._turn(chat_id, text, params, idempotency_key, streaming=False)
        async with aclosing(turn):
            async for item in turn:
                if isinstance(item, Message):
                    answer = item
        assert answer is not None
        return answer

    async def send_message(self, chat_id: str, text: str, **kwargs: Any) -> str:
        """The tutorial's call: send ``text`` with the whole history, return the answer."""
        return (await self.send(chat_id, text, **kwargs)).content

    async def stream(
        self,
        chat_id: str,
        text: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncIterator[str | Message]:
        """Yield text deltas as they arrive, then the stored assistant message."""
        turn = self._turn(chat_id, text, params, idempotency_key, streaming=True)
        async with aclosing(turn):
            async for item in turn:
                yield item

    async def stream_message(self, chat_id: str, text: str, **kwargs: Any) -> AsyncIterator[str]:
        """Yield only the answer's text deltas."""
        stream = self.stream(chat_id, text, **kwargs)
        async with aclosing(stream):
            async for item in stream:
                if isinstance(item, str):
                    yield item

    async def retry(self, chat_id: str, **kwargs: Any) -> Message:
        """Ask again the last user message if its turn failed."""
        chat = await self.get_chat(chat_id)
        recent = await self._core.store.messages(chat_id, after_seq=chat.message_count - 2)
        failed = [m for m in recent if m.role is Role.USER and m.status is TurnStatus.FAILED]
        if not failed:
            raise InvalidInput("nothing to retry: the chat's last turn did not fail")
        return await self.send(chat_id, failed[-1].content, **kwargs)

    async def _turn(
        self,
        chat_id: str,
        text: str,
        params: GenerationParams | dict[str, Any] | None,
        idempotency_key: str | None,
        *,
        streaming: bool,
    ) -> AsyncIterator[str | Message]:
        text = check_text(text, field="message", max_chars=self.settings.max_message_chars)
        call_params = check_params(params)
        store = await self._ready()
        core = self._core
        async with core.locks.hold(chat_id, self.settings.busy_timeout):
            chat = await store.get_chat(chat_id, self.tenant_id)
            if chat is None:
                raise ChatNotFound(chat_id)
            backend = core.backend(chat.backend)
            gen_params = GenerationParams.model_validate(chat.params).merged(call_params)
            history = await core.visible_history(chat)
            context = self._context(chat, history, text, backend, gen_params)

            user = await store.add_user_message(chat.id, text, idempotency_key=idempotency_key)
            started = time.perf_counter()
            completion: Completion | None = None
            try:
                if streaming:
                    deltas = backend.stream(context, gen_params, chat.model)
                    async with aclosing(deltas):  # type: ignore[type-var]
                        async for item in deltas:
                            if isinstance(item, str):
                                yield item
                            else:
                                completion = item
                else:
                    completion = await backend.complete(context, gen_params, chat.model)
                if completion is None:
                    raise BackendError("the model ended without an answer")
                answer = Message(
                    chat_id=chat.id, seq=0, role=Role.ASSISTANT,
                    content=completion.text.strip(), model=completion.model,
                    prompt_tokens=completion.usage.prompt_tokens,
                    completion_tokens=completion.usage.completion_tokens,
                    latency_ms=int((time.perf_counter() - started) * 1000),
                )
                stored = await store.complete_turn(user, answer)
            except BackendError as exc:
                await self._fail(user, str(exc), exc.partial, history)
                raise
            except BaseException as exc:  # cancelled, consumer gone, storage trouble
                reason = "cancelled before the answer was stored" if isinstance(
                    exc, (asyncio.CancelledError, GeneratorExit)) else f"internal error: {exc!r}"
                await asyncio.shield(self._fail(user, reason, "", history))
                raise
            core.cache.grew(chat.id, history.add([replace(user, status=TurnStatus.OK), stored]))
        yield stored

    async def _fail(self, user: Message, error: str, partial: str, history: History) -> None:
        """Keep the user message, mark the turn failed, keep any partial answer apart."""
        partial_message = Message(
            chat_id=user.chat_id, seq=0, role=Role.ASSISTANT, content=partial,
            status=TurnStatus.FAILED, error=error,
        ) if partial else None
        try:
            await self._core.store.fail_turn(user, error, partial_message)
            history.add([replace(user, status=TurnStatus.FAILED)])
        except Exception:
            # Storage is in trouble too: forget the cached entry, recovery will mark
            # the pending message failed when the store is healthy again.
            self._core.cache.discard(user.chat_id)

    def _context(
        self,
        chat: Chat,
        history: History,
        text: str,
        backend: Backend,
        params: GenerationParams,
    ) -> list[dict[str, str]]:
        """System prompt + the newest whole turns that fit + the new message."""
        for index, token_count in enumerate(history.tokens):
            if token_count is None:
                message = history.messages[index]
                history.tokens[index] = backend.count_tokens(
                    message.role.value, message.content, chat.model)
        reserve = params.max_tokens or self.settings.max_output_tokens
        system_tokens = backend.count_tokens("system", chat.system_prompt, chat.model)
        budget = (backend.context_window(chat.model) - reserve - system_tokens
                  - _ANSWER_PRIMER_TOKENS)
        if budget <= 0:
            raise ContextTooLong(
                "the system prompt and the reserved answer already fill the context window")
        new = Message(chat.id, 0, Role.USER, text)
        counts = [*history.tokens, backend.count_tokens("user", text, chat.model)]
        visible = [*history.messages, new]
        start = trim_start(visible, counts, budget)  # type: ignore[arg-type]
        return [
            {"role": "system", "content": chat.system_prompt},
            *(m.as_openai() for m in visible[start:]),
        ]

    def _check_system_prompt(self, value: str) -> str:
        return check_text(value, field="system_prompt",
                          max_chars=self.settings.max_message_chars, allow_empty=True)

