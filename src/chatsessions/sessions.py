"""AsyncChatSessions: the public async API (the turn itself lives in ``turn.py``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from chatsessions.backends import Backend
from chatsessions.config import Settings
from chatsessions.engine.answer import AnswerOptions, run_answer
from chatsessions.engine.content import PartSpec, check_content
from chatsessions.engine.export import export_json, export_markdown
from chatsessions.engine.importing import build_chat
from chatsessions.engine.model_call import final
from chatsessions.engine.regenerate import run_regenerate
from chatsessions.engine.runtime import Runtime
from chatsessions.engine.structured import (
    FormatSpec,
    check_response_format,
    parse_answer,
    parse_into,
)
from chatsessions.engine.titles import TITLE_GRACE
from chatsessions.engine.tool_round import RoundOptions, cancel_calls, run_tool_round
from chatsessions.engine.tools import (
    FunctionTool,
    ToolSpec,
    check_chat_message,
    check_pairing,
    check_tool_choice,
    check_tools,
    functions_of,
    tool_options,
)
from chatsessions.engine.turn import TurnOptions, pending_calls, run_turn
from chatsessions.errors import BackendError, ChatNotFound, ChatSessionsError, InvalidInput
from chatsessions.keys import AsyncApiKeys
from chatsessions.runs import AsyncRuns
from chatsessions.store import Store
from chatsessions.types import (
    Chat,
    Completion,
    ContextPolicy,
    GenerationParams,
    Message,
    ResponseFormat,
    Role,
    SearchHit,
    StreamItem,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolOptions,
    TurnStatus,
    UsageReport,
    utcnow,
)
from chatsessions.validation import (
    MAX_TITLE_CHARS,
    check_context_policy,
    check_label,
    check_metadata,
    check_params,
    check_text,
    check_when,
)

_UNSET: Any = object()


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
        _runtime: Runtime | None = None,
        **overrides: Any,
    ) -> None:
        self.tenant_id = tenant_id
        if _runtime is not None:  # another tenant's view of the same runtime
            self._runtime = _runtime
            return
        if isinstance(backend, str):  # the setting's name, not a backend object
            overrides["backend"] = backend
            backend = None
        if settings is None:
            settings = Settings(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        self._runtime = Runtime(settings, store, backend)

    @property
    def settings(self) -> Settings:
        return self._runtime.settings

    def for_tenant(self, tenant_id: str) -> AsyncChatSessions:
        """The view of another tenant on the same store, backends and cache (opened and
        closed with this one)."""
        return AsyncChatSessions(tenant_id=tenant_id, _runtime=self._runtime)

    # lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, migrate, and fail turns a previous crash left pending."""
        await self._runtime.open()

    async def close(self, *, title_grace: float = TITLE_GRACE) -> None:
        """Close the store and backends, after waiting up to ``title_grace`` seconds for
        automatic titles still being written (the rest are cancelled: no title, no harm)."""
        await self._runtime.close(title_grace)

    async def __aenter__(self) -> AsyncChatSessions:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _ready(self) -> Store:
        runtime = self._runtime
        if not runtime.opened:
            await runtime.open()
        return runtime.store

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
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        context_policy: ContextPolicy | str = ContextPolicy.TRIM,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
    ) -> str:
        """Start a chat whose history begins with the system prompt; return its id.

        ``context_policy`` says what happens once the chat outgrows the model's window:
        ``trim`` the oldest turns, ``summarize`` them, or refuse (``none``).

        ``tools`` are offered to the model on every turn: definitions (:class:`Tool`, or
        dicts in OpenAI's shape) and Python functions, which :meth:`send` runs itself
        (their definitions are stored; the functions stay with this object).
        ``tool_choice`` (``auto``, ``none``, ``required`` or one of their names) is kept
        with them; a call's own ``tool_choice`` wins over it.

        Repeating a call with the same ``idempotency_key`` returns the same chat instead of
        creating another; the same key with different arguments is refused.
        """
        store = await self._ready()
        backend_name = backend or self._runtime.models.default_backend
        chat = Chat(
            id=chat_id or str(uuid.uuid4()),
            tenant_id=self.tenant_id,
            system_prompt=self._check_system_prompt(
                self.settings.system_prompt if system_prompt is None else system_prompt
            ),
            title=None if title is None else check_label(
                title, field="title", max_chars=MAX_TITLE_CHARS),
            backend=backend_name,
            model=check_label(model, field="model", max_chars=200) if model
            else self._runtime.models.backend(backend_name).default_model,
            params=check_params(params).as_kwargs(),
            metadata=check_metadata(metadata),
            expires_at=check_when(expires_at, field="expires_at"),
            context_policy=check_context_policy(context_policy),
            tools=check_tools(tools),
        )
        chat = replace(chat, tool_choice=check_tool_choice(tool_choice, chat.tools))
        self._remember(chat.id, tools)
        if idempotency_key is None:
            await store.create_chat(chat)
            self._runtime.created(chat)
            return chat.id
        check_text(idempotency_key, field="idempotency key", max_chars=200)
        digest = request_hash(chat)
        for _ in range(2):  # the second look settles a race with a concurrent twin
            earlier = await store.chat_by_idempotency_key(self.tenant_id, idempotency_key)
            if earlier is not None:
                if earlier[1] != digest:
                    raise InvalidInput(
                        "this Idempotency-Key was already used to create a different chat")
                return earlier[0].id
            if await store.create_chat(chat, idempotency_key=idempotency_key,
                                       request_hash=digest) is not None:
                return chat.id
        raise InvalidInput("this Idempotency-Key is in use by a concurrent request")

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
        include_archived: bool = False,
        archived: bool | None = None,
    ) -> list[Chat]:
        """Newest first; pass the last chat's ``(created_at, id)`` as ``before`` to page.

        Archived chats are left out unless ``include_archived``; ``archived=True`` lists
        only them (and ``False`` only the others), whatever ``include_archived`` says."""
        store = await self._ready()
        if archived is None and not include_archived:
            archived = False
        return await store.list_chats(
            self.tenant_id, limit=limit, before=before,
            title_contains=title_contains, metadata=metadata, archived=archived,
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
        expires_at: datetime | None = _UNSET,
        context_policy: ContextPolicy | str = _UNSET,
        tools: Sequence[ToolSpec] | None = _UNSET,
        tool_choice: str | None = _UNSET,
    ) -> Chat:
        """Change the fields given; ``title=None``, ``expires_at=None``, ``tools=None``
        and ``tool_choice=None`` clear them (``tools`` and ``tool_choice`` as for
        :meth:`create_chat`; a choice naming a tool must name one the chat keeps)."""
        store = await self._ready()
        changes: dict[str, Any] = {}
        if title is not _UNSET:
            changes["title"] = None if title is None else check_label(
                title, field="title", max_chars=MAX_TITLE_CHARS)
        if system_prompt is not _UNSET:
            changes["system_prompt"] = self._check_system_prompt(system_prompt)
        if model is not _UNSET:
            changes["model"] = check_label(model, field="model", max_chars=200)
        if params is not _UNSET:
            changes["params"] = check_params(params).as_kwargs()
        if metadata is not _UNSET:
            changes["metadata"] = check_metadata(metadata)
        if expires_at is not _UNSET:
            changes["expires_at"] = check_when(expires_at, field="expires_at")
        if context_policy is not _UNSET:
            changes["context_policy"] = check_context_policy(context_policy)
        if tools is not _UNSET:
            changes["tools"] = check_tools(tools)
        if tool_choice is not _UNSET or "tools" in changes:
            changes.update(await self._tool_choice(chat_id, changes.get("tools"),
                                                   tool_choice))
        if not changes:
            return await self.get_chat(chat_id)
        chat = await store.update_chat(chat_id, self.tenant_id, changes)
        if chat is None:
            raise ChatNotFound(chat_id)
        if tools is not _UNSET:
            self._runtime.functions.pop(chat_id, None)
            self._remember(chat_id, tools)
        return chat

    async def _tool_choice(self, chat_id: str, tools: tuple[Tool, ...] | None,
                           choice: str | None) -> dict[str, Any]:
        """The checked ``tool_choice`` change of an update: a new choice is checked
        against the tools the chat will have, and new tools against the kept choice."""
        if tools is not None and choice is not _UNSET:
            return {"tool_choice": check_tool_choice(choice, tools)}
        chat = await self.get_chat(chat_id)
        if choice is not _UNSET:
            return {"tool_choice": check_tool_choice(choice, chat.tools)}
        try:
            check_tool_choice(chat.tool_choice, tools or ())
        except InvalidInput:  # it named a tool the chat no longer has
            return {"tool_choice": None}
        return {}

    def _remember(self, chat_id: str, tools: Sequence[ToolSpec] | None) -> None:
        """Keep the Python functions among a chat's tools, for :meth:`send` to run."""
        functions = functions_of(tools)
        if functions:
            self._runtime.functions[chat_id] = functions

    async def delete_chat(self, chat_id: str) -> None:
        """Delete the chat and every message of it, for real."""
        store = await self._ready()
        if not await store.delete_chat(chat_id, self.tenant_id):
            raise ChatNotFound(chat_id)
        self._runtime.cache.discard(chat_id)
        self._runtime.functions.pop(chat_id, None)

    async def archive_chat(self, chat_id: str) -> Chat:
        """Hide the chat from :meth:`list_chats` (unless asked for); it stays usable."""
        return await self._set_archived(chat_id, archived=True)

    async def unarchive_chat(self, chat_id: str) -> Chat:
        return await self._set_archived(chat_id, archived=False)

    async def _set_archived(self, chat_id: str, *, archived: bool) -> Chat:
        store = await self._ready()
        chat = await store.update_chat(chat_id, self.tenant_id,
                                       {"archived_at": utcnow() if archived else None})
        if chat is None:
            raise ChatNotFound(chat_id)
        return chat

    async def history(
        self, chat_id: str, *, include_failed: bool = False, include_replaced: bool = False
    ) -> list[Message]:
        """The conversation, starting with the system prompt (seq 0): the ok messages the
        model sees. ``include_replaced`` adds answers superseded by :meth:`regenerate`;
        ``include_failed`` gives every stored message (failed turns and replaced answers
        too), as exports want."""
        chat = await self.get_chat(chat_id)
        rows = await self._runtime.store.messages(chat_id)
        system = Message(chat_id, 0, Role.SYSTEM, chat.system_prompt, created_at=chat.created_at)
        wanted = {TurnStatus.OK, *([TurnStatus.REPLACED] if include_replaced else [])}
        kept = [m for m in rows if include_failed or m.status in wanted]
        return [system, *kept]

    # turns ------------------------------------------------------------------------

    async def send(
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
        """Run one turn and return the stored assistant message (with usage).

        ``system_prompt`` answers this turn under another prompt (the chat keeps its own);
        ``if_message_count`` runs the turn only if the chat still holds that many messages
        when its turn comes, else raises :class:`ChatMoved` having stored nothing.

        ``tools`` (replacing the chat's for this call), ``tool_choice`` and
        ``parallel_tool_calls`` are offered to the model. When it calls Python functions
        given as tools (here or on the chat), they are run and their outputs sent back,
        up to ``max_tool_rounds`` times (default ``Settings.max_tool_rounds``; after the
        last the model must answer in text), every call and output stored. When it calls
        a tool that is only a definition, the answer returned holds ``tool_calls`` and the
        chat waits for :meth:`send_tool_results` (or :meth:`cancel_tool_calls`); a new
        message meanwhile raises :class:`ToolCallsPending`.

        ``text`` may be a list of parts (text, and images by URL or base64 data URL, in
        OpenAI's chat or Responses shapes), stored as the message's ``parts``.
        ``response_format`` (a pydantic model class, a :class:`ResponseFormat`, or
        OpenAI's dict) asks for JSON of that shape; the answer is stored as text and
        returned with ``parsed`` set (the model's instance, or the JSON value), or
        :class:`InvalidAnswer` is raised when it does not fit (the answer stays stored).
        ``context_policy`` overrides the chat's for this turn (``none`` refuses a chat
        too long for the window with :class:`ContextTooLong`, storing nothing).
        """
        spec = check_response_format(response_format)
        return await _stored(self._converse(chat_id, text, TurnOptions(
            check_params(params), idempotency_key, system_prompt, if_message_count,
            response_format=spec, context_policy=_policy(context_policy)),
            tools, tool_choice, parallel_tool_calls, max_tool_rounds, streaming=False,
            model=response_format))

    async def send_message(
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
        """The tutorial's call: send ``text`` with the whole history, return the answer
        (options as for :meth:`send`; Python functions among ``tools`` are run)."""
        return (await self.send(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            max_tool_rounds=max_tool_rounds)).content

    async def stream(
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
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """Yield text deltas and tool-call pieces as they arrive, each stored answer that
        calls tools and each stored tool output (as Messages), then the stored final
        assistant message, last (options as for :meth:`send`)."""
        turn = self._streamed(chat_id, text, params, idempotency_key, system_prompt,
                              if_message_count, tools, tool_choice, parallel_tool_calls,
                              max_tool_rounds, response_format, context_policy)
        async with aclosing(turn):
            async for item in turn:
                yield item

    def _streamed(
        self, chat_id: str, text: str | Sequence[PartSpec],
        params: GenerationParams | dict[str, Any] | None, idempotency_key: str | None,
        system_prompt: str | None, if_message_count: int | None,
        tools: Sequence[ToolSpec] | None, tool_choice: str | None,
        parallel_tool_calls: bool | None, max_tool_rounds: int | None,
        response_format: FormatSpec | None, context_policy: ContextPolicy | str | None,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """:meth:`stream`'s turn, its options checked now (a background run checks them
        before it is stored: ``runs.py``)."""
        spec = check_response_format(response_format)
        return self._converse(chat_id, text, TurnOptions(
            check_params(params), idempotency_key, system_prompt, if_message_count,
            response_format=spec, context_policy=_policy(context_policy)),
            tools, tool_choice, parallel_tool_calls, max_tool_rounds, streaming=True,
            model=response_format)

    async def stream_message(
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
    ) -> AsyncGenerator[str, None]:
        """Yield only the answer's text deltas (options as for :meth:`send`)."""
        stream = self.stream(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            max_tool_rounds=max_tool_rounds)
        async with aclosing(stream):
            async for item in stream:
                if isinstance(item, str):
                    yield item

    # tool calls -----------------------------------------------------------------------

    async def send_tool_results(
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
    ) -> Message:
        """Store the outputs of the calls the chat is waiting for (``{call_id: output}``,
        every pending call at once) and ask the model again; return its stored answer,
        which may call tools again (Python functions among the tools are run, as in
        :meth:`send`). Unknown ids and missing outputs raise :class:`InvalidInput` naming
        them; a repeated ``idempotency_key`` returns the stored answer. ``system_prompt``
        answers this round under another prompt (the chat keeps its own), as in
        :meth:`send`."""
        return await _stored(self._tool_results(
            chat_id, results, params, tools, tool_choice, parallel_tool_calls,
            idempotency_key, max_tool_rounds, system_prompt, streaming=False))

    async def stream_tool_results(
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
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """:meth:`send_tool_results`, yielding as :meth:`stream` does (deltas and call
        pieces, then the stored outputs, then the stored answer, last: the outputs are
        written with the answer)."""
        run = self._tool_results(chat_id, results, params, tools, tool_choice,
                                 parallel_tool_calls, idempotency_key, max_tool_rounds,
                                 system_prompt, streaming=True)
        async with aclosing(run):
            async for item in run:
                yield item

    async def pending_tool_calls(self, chat_id: str) -> list[ToolCall]:
        """The calls of the chat's last answer still without an output (empty: none)."""
        chat = await self.get_chat(chat_id)
        history = await self._runtime.settled_history(chat)
        return pending_calls(history.messages)

    async def cancel_tool_calls(
        self, chat_id: str, call_ids: Sequence[str] | None = None
    ) -> list[ToolCall]:
        """Give the pending calls ``call_ids`` (default: all) the output ``"error:
        cancelled by the caller"``, so the chat can go on with a new message; return them.
        The model is not asked (its next answer comes with the next message)."""
        if call_ids is not None and (isinstance(call_ids, str) or not all(
                isinstance(i, str) for i in call_ids)):
            raise InvalidInput("call_ids must be a list of tool call ids")
        await self._ready()
        return await cancel_calls(self._runtime, self.tenant_id, chat_id,
                                  None if call_ids is None else list(call_ids))

    def _tool_results(
        self, chat_id: str, results: Mapping[str, str],
        params: GenerationParams | dict[str, Any] | None, tools: Sequence[ToolSpec] | None,
        tool_choice: str | None, parallel_tool_calls: bool | None,
        idempotency_key: str | None, max_tool_rounds: int | None,
        system_prompt: str | None, *, streaming: bool,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        if not isinstance(results, Mapping) or not results:
            raise InvalidInput("results must map each pending tool call's id to its output")
        limit = self.settings.max_message_chars
        checked = {check_label(call_id, field="tool_call_id", max_chars=200):
                   check_text(output, field="tool output", max_chars=limit, allow_empty=True)
                   for call_id, output in results.items()}
        if idempotency_key is not None:
            check_text(idempotency_key, field="idempotency key", max_chars=200)
        loop = self._loop(chat_id, tools, tool_choice, parallel_tool_calls, max_tool_rounds)
        options = RoundOptions(check_params(params), idempotency_key, loop.tools,
                               None if system_prompt is None
                               else self._check_system_prompt(system_prompt))
        return self._run_loop(chat_id, loop, self._round(chat_id, checked, options,
                                                         streaming), streaming)

    async def _round(self, chat_id: str, results: Mapping[str, str] | None,
                     options: RoundOptions, streaming: bool
                     ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        await self._ready()
        run = run_tool_round(self._runtime, self.tenant_id, chat_id, results, options,
                             streaming=streaming)
        async with aclosing(run):
            async for item in run:
                yield item

    def _loop(self, chat_id: str, tools: Sequence[ToolSpec] | None, tool_choice: str | None,
              parallel: bool | None, max_rounds: int | None) -> _Loop:
        if max_rounds is not None and (not isinstance(max_rounds, int) or max_rounds < 0):
            raise InvalidInput("max_tool_rounds must be 0 or more")
        functions = {**self._runtime.functions.get(chat_id, {}), **functions_of(tools)}
        return _Loop(tool_options(tools, tool_choice, parallel), functions,
                     self.settings.max_tool_rounds if max_rounds is None else max_rounds)

    def _converse(
        self, chat_id: str, text: str | Sequence[PartSpec], options: TurnOptions,
        tools: Sequence[ToolSpec] | None, tool_choice: str | None, parallel: bool | None,
        max_rounds: int | None, *, streaming: bool, model: FormatSpec | None = None,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        loop = self._loop(chat_id, tools, tool_choice, parallel, max_rounds)
        turn = self._turn(chat_id, text, replace(options, tools=loop.tools),
                          streaming=streaming)
        if options.response_format is not None:
            turn = _parsing(turn, options.response_format, model)
        if not loop.functions:
            return turn
        return self._run_loop(chat_id, loop, turn, streaming,
                              replayable=options.idempotency_key is not None)

    async def _run_loop(
        self, chat_id: str, loop: _Loop, first: AsyncGenerator[str | ToolCallDelta | Message,
                                                               None],
        streaming: bool, *, replayable: bool = False,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """Yield what ``first`` yields; while its answer calls only Python functions we
        hold, run them and yield the next round's items too."""
        run, rounds = first, 0
        while True:
            answer: Message | None = None
            async with aclosing(run):
                async for item in run:
                    if isinstance(item, Message) and item.role is Role.ASSISTANT:
                        answer = item
                    yield item
            calls = answer.tool_calls if answer is not None else None
            if (not calls or rounds >= loop.max_rounds
                    or any(call.name not in loop.functions for call in calls)):
                return
            if replayable and rounds == 0:  # a replayed answer: run nothing twice
                waiting = await self.pending_tool_calls(chat_id)
                if {c.id for c in waiting} != {c.id for c in calls}:
                    return
            outputs = await asyncio.gather(*(loop.functions[call.name].run(call)
                                             for call in calls))
            rounds += 1
            tools = loop.tools
            if rounds >= loop.max_rounds:  # the last round: the model must answer in text
                tools = replace(tools or ToolOptions(), choice="none")
            run = self._round(chat_id, {c.id: out for c, out in zip(calls, outputs,
                                                                   strict=True)},
                              RoundOptions(None, None, tools), streaming)

    async def retry(
        self,
        chat_id: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
    ) -> Message:
        """Ask again the last user message if its turn failed (options as for :meth:`send`).
        If another turn gets in first, :class:`ChatMoved` is raised and nothing is stored.
        After a failed tool round (outputs stored, no answer), asks again from them."""
        if await self._after_outputs(chat_id):
            return await _stored(self._round(
                chat_id, None, RoundOptions(check_params(params), idempotency_key), False))
        text, count = await self._failed_turn(chat_id)
        return await self.send(chat_id, text, params=params, idempotency_key=idempotency_key,
                               system_prompt=system_prompt, if_message_count=count)

    async def stream_retry(
        self,
        chat_id: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """:meth:`retry`, yielding text deltas, then the stored answer."""
        if await self._after_outputs(chat_id):
            run = self._round(chat_id, None, RoundOptions(check_params(params),
                                                          idempotency_key), True)
            async with aclosing(run):
                async for item in run:
                    yield item
            return
        text, count = await self._failed_turn(chat_id)
        stream = self.stream(chat_id, text, params=params, idempotency_key=idempotency_key,
                             system_prompt=system_prompt, if_message_count=count)
        async with aclosing(stream):
            async for item in stream:
                yield item

    async def _after_outputs(self, chat_id: str) -> bool:
        """Whether the chat's last message is a tool output still without an answer."""
        chat = await self.get_chat(chat_id)
        history = await self._runtime.settled_history(chat)
        last = next((m for m in reversed(history.messages) if m.role is not Role.SYSTEM),
                    None)
        return last is not None and last.role is Role.TOOL

    async def _failed_turn(self, chat_id: str) -> tuple[str, int]:
        """The failed last user message's text, and the chat's message count."""
        chat = await self.get_chat(chat_id)
        # A failed turn leaves at most a summary and a partial answer after its message.
        recent = await self._runtime.store.messages(chat_id, after_seq=chat.message_count - 3)
        asked = [m for m in recent if m.role is Role.USER]
        if not asked or asked[-1].status is not TurnStatus.FAILED:
            raise InvalidInput("nothing to retry: the chat's last turn did not fail")
        return asked[-1].content, chat.message_count

    async def regenerate(
        self, chat_id: str, *, params: GenerationParams | dict[str, Any] | None = None
    ) -> Message:
        """Answer the last user message again and return the new stored answer.

        The earlier answer is kept with status ``replaced`` (see :meth:`history`); the model
        sees the history without it. If the model fails, nothing changes and the
        :class:`BackendError` is raised; with nothing to regenerate, :class:`InvalidInput`.
        An answer to tool outputs is asked again from the same outputs (the calls and
        outputs stay); an answer that called tools (still waiting) is replaced by a new
        answer to its question, which may call tools again.
        """
        return await _stored(await self._regeneration(chat_id, params, streaming=False))

    async def stream_regenerate(
        self, chat_id: str, *, params: GenerationParams | dict[str, Any] | None = None
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """:meth:`regenerate`, yielding text deltas, then the stored new answer."""
        run = await self._regeneration(chat_id, params, streaming=True)
        async with aclosing(run):
            async for item in run:
                yield item

    async def _regeneration(
        self, chat_id: str, params: GenerationParams | dict[str, Any] | None, *,
        streaming: bool,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        checked = check_params(params)
        await self._ready()
        return run_regenerate(self._runtime, self.tenant_id, chat_id, checked,
                              streaming=streaming)

    async def edit_message(
        self, chat_id: str, seq: int, text: str, *,
        params: GenerationParams | dict[str, Any] | None = None,
    ) -> tuple[str, Message]:
        """Ask ``text`` in place of the user message ``seq``, in a fork of the chat made just
        before it; return the fork's id and its answer. The chat itself is not changed.

        If the model fails, the fork is kept with the edited message marked failed (ready
        for :meth:`retry`) and the :class:`BackendError` raised names it in ``chat_id``.
        """
        text = check_text(text, field="message", max_chars=self.settings.max_message_chars)
        check_params(params)
        await self.get_chat(chat_id)
        found = await self._runtime.store.messages(chat_id, after_seq=seq - 1, limit=1)
        if not found or found[0].seq != seq or found[0].role is not Role.USER:
            raise InvalidInput(f"message {seq} is not a user message of this chat")
        fork_id = await self.fork_chat(chat_id, up_to_seq=seq - 1)
        try:
            return fork_id, await self.send(fork_id, text, params=params)
        except BackendError as exc:
            exc.chat_id = fork_id
            raise
        except ChatSessionsError:  # refused before the message was stored: leave no fork
            await self._runtime.store.delete_chat(fork_id, self.tenant_id)
            raise

    async def _turn(
        self,
        chat_id: str,
        content: str | Sequence[PartSpec],
        options: TurnOptions,
        *,
        streaming: bool,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        text, parts = check_content(content, field="message",
                                    max_chars=self.settings.max_message_chars)
        if parts is not None:
            options = replace(options, parts=parts)
        if options.idempotency_key is not None:
            check_text(options.idempotency_key, field="idempotency key", max_chars=200)
        if options.system_prompt is not None:
            options = replace(options,
                              system_prompt=self._check_system_prompt(options.system_prompt))
        await self._ready()
        turn = run_turn(self._runtime, self.tenant_id, chat_id, text, options,
                        streaming=streaming)
        async with aclosing(turn):
            async for item in turn:
                if isinstance(item, Message):  # before the yield: a consumer may stop there
                    self._runtime.titles.after_answer(self.tenant_id, item)
                yield item

    # answers that are not stored --------------------------------------------------------

    async def answer(
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
        """Answer ``text`` as the chat's next turn would, storing nothing (``store=False``).

        The model is shown what a turn would show it, by the chat's context policy (a
        summary the policy needs is written for this answer and not kept), under the same
        circuit breaker and deadline; the chat is left as it was, and turns on it are not
        held up. ``chat_id=None`` answers with no history, by the default backend.
        ``prior`` adds user/assistant messages before ``text``; ``up_to_seq`` answers from
        the history up to that message. Returns the answer as a Message with seq 0.
        ``text`` (parts), ``response_format`` and ``context_policy`` as for :meth:`send`.
        """
        return await _stored(await self._answer(
            chat_id, text, params, system_prompt, model, prior, up_to_seq, streaming=False,
            response_format=response_format, context_policy=context_policy))

    async def stream_answer(
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
    ) -> AsyncGenerator[str | Message, None]:
        """:meth:`answer`, yielding text deltas, then the answer (not stored)."""
        run = await self._answer(chat_id, text, params, system_prompt, model, prior,
                                 up_to_seq, streaming=True, response_format=response_format,
                                 context_policy=context_policy)
        async with aclosing(run):
            async for item in run:
                yield item

    async def _answer(
        self, chat_id: str | None, content: str | Sequence[PartSpec],
        params: GenerationParams | dict[str, Any] | None, system_prompt: str | None,
        model: str | None, prior: Sequence[tuple[Role, str]], up_to_seq: int | None, *,
        streaming: bool, response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> AsyncGenerator[str | Message, None]:
        limit = self.settings.max_message_chars
        spec = check_response_format(response_format)
        options = AnswerOptions(
            params=check_params(params),
            system_prompt=None if system_prompt is None
            else self._check_system_prompt(system_prompt),
            model=None if model is None else check_label(model, field="model", max_chars=200),
            prior=[(_added_role(role), check_text(said, field="message", max_chars=limit))
                   for role, said in prior],
            up_to_seq=up_to_seq, response_format=spec, context_policy=_policy(context_policy))
        text, parts = check_content(content, field="message", max_chars=limit)
        options = replace(options, parts=parts)
        if up_to_seq is not None and up_to_seq < 0:
            raise InvalidInput("up_to_seq must not be negative")
        await self._ready()
        run = run_answer(self._runtime, self.tenant_id, chat_id, text, options,
                         streaming=streaming)
        return run if spec is None else _parsing(run, spec, response_format)

    async def complete(
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
        """A stateless completion of ``messages`` (OpenAI's chat shape: the whole
        conversation, as its chat completions take it, with assistant ``tool_calls`` and
        ``role: tool`` outputs). Nothing is read or stored, but the call goes through the
        circuit breaker and the deadline as a turn's does. ``backend`` defaults to the
        configured one, ``model`` to its own. ``tools`` (definitions; functions are only
        described, not run), ``tool_choice`` and ``parallel_tool_calls`` are offered to
        the model; the calls it makes are the Completion's ``tool_calls``.
        ``response_format`` asks for JSON of that shape (the text is not parsed here)."""
        return await final(self._complete(messages, model, backend, params,
                                          tool_options(tools, tool_choice,
                                                       parallel_tool_calls),
                                          streaming=False,
                                          response_format=response_format))

    async def stream_complete(
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
    ) -> AsyncGenerator[str | ToolCallDelta | Completion, None]:
        """:meth:`complete`, yielding text deltas and tool-call pieces, then the
        Completion."""
        run = self._complete(messages, model, backend, params,
                             tool_options(tools, tool_choice, parallel_tool_calls),
                             streaming=True, response_format=response_format)
        async with aclosing(run):
            async for item in run:
                yield item

    def _complete(
        self, messages: Sequence[Mapping[str, Any]], model: str | None, backend: str | None,
        params: GenerationParams | dict[str, Any] | None, tools: ToolOptions | None, *,
        streaming: bool, response_format: FormatSpec | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        checked = check_params(params)
        spec = check_response_format(response_format)
        if isinstance(messages, (str, bytes, Mapping)):
            raise InvalidInput("messages must be a list of messages")
        shown = [check_chat_message(item, self.settings.max_message_chars)
                 for item in messages]
        check_pairing(shown)
        models = self._runtime.models
        chosen = models.backend(backend)
        return models.call(chosen, shown, checked, model or chosen.default_model,
                           streaming=streaming, tools=tools, response_format=spec)

    async def sweep(self) -> int:
        """Housekeeping for long-running services: fail turns orphaned by dead replicas
        (lease expired, or the holder's process gone from this host), forget expired
        idempotency keys, and delete expired chats (of every tenant) with their messages.
        Returns turns failed."""
        store = await self._ready()
        await self._runtime.leases.release_leaked()  # a database outage's leftovers
        failed = await store.recover_pending(await self._runtime.dead_owners(),
                                             alive=self._runtime.owner)
        await store.fail_abandoned_runs(utcnow())
        cutoff = utcnow() - timedelta(hours=self.settings.idempotency_ttl_hours)
        await store.expire_idempotency_keys(cutoff)
        for chat_id in await store.delete_expired(utcnow()):
            self._runtime.cache.discard(chat_id)
        return failed

    async def lead_sweeps(self) -> bool:
        """Whether this process is the one, of all sharing the database, that should run
        periodic sweeps (the service asks before each): it takes the role if it is free
        and keeps it until it exits or loses its database connection. PostgreSQL: an
        advisory lock, across workers and replicas; SQLite: a lock file beside the
        database."""
        store = await self._ready()
        return await store.lead_sweeps()

    # usage and search ---------------------------------------------------------------

    async def usage(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> UsageReport:
        """This tenant's answered turns, tokens and cost per model, for answers (and
        summaries) written in ``[start, end)``. Costs come from ``Settings.prices``; models
        without a price cost 0 and are listed in the report's ``unpriced``."""
        start = check_when(start, field="start")
        end = check_when(end, field="end")
        if start is not None and end is not None and end < start:
            raise InvalidInput("the end of the range is before its start")
        store = await self._ready()
        prices = self.settings.prices
        models = []
        for used in await store.usage(self.tenant_id, start, end):
            price = prices.get(used.model)
            if price is None:
                models.append(used)
                continue
            cost = (used.prompt_tokens * price[0] + used.completion_tokens * price[1]) / 1e6
            models.append(replace(used, cost=cost, priced=True))
        return UsageReport(start=start, end=end, models=models)

    async def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Messages of this tenant's chats that contain every word of ``query``, best
        match first, each with a snippet (matched words in [brackets])."""
        query = check_text(query, field="query", max_chars=1000)
        if not 1 <= limit <= 200:
            raise InvalidInput("limit must be within 1..200")
        store = await self._ready()
        return await store.search(self.tenant_id, query, limit)

    def _check_system_prompt(self, value: str) -> str:
        return check_text(value, field="system_prompt",
                          max_chars=self.settings.max_message_chars, allow_empty=True)

    # export and import ----------------------------------------------------------------

    async def export_chat(self, chat_id: str) -> dict[str, Any]:
        """The chat as a lossless JSON-ready document (every stored message, whatever its
        status) that :meth:`import_chat` takes back."""
        chat = await self.get_chat(chat_id)
        return export_json(chat, await self._runtime.store.messages(chat_id))

    async def import_chat(self, data: Any, *, keep_id: bool = False) -> str:
        """Store a chat from an export (:meth:`export_chat`, seqs, statuses, times and
        counters kept) or from an OpenAI-style ``[{"role", "content"}]`` list (a leading
        system message becomes the system prompt); return its id. The chat gets a new id
        unless ``keep_id`` and the export's id is free (else :class:`ChatExists`). Malformed
        data raises :class:`InvalidInput` and stores nothing."""
        store = await self._ready()
        chat, rows = build_chat(
            data, tenant_id=self.tenant_id, settings=self.settings,
            default_backend=self._runtime.models.default_backend,
            default_model=lambda name: self._runtime.models.backend(name).default_model,
            keep_id=keep_id)
        await store.import_chat(chat, rows)
        return chat.id

    # building blocks for protocols on top (the OpenAI-compatible API) ----------------

    def get_backend(self, name: str | None = None) -> Backend:
        """The backend object chats use: the default one, or the one called ``name``."""
        return self._runtime.models.backend(name)

    async def append_messages(
        self, chat_id: str, messages: Sequence[tuple[Role, str] | Mapping[str, Any]]
    ) -> list[Message]:
        """Add messages to the history as they are, without asking the model (imported
        history, a conversation's items): ``(role, text)`` pairs of user and assistant
        messages, or dicts in OpenAI's chat shape, which may also be an answer's
        ``tool_calls`` or a ``role: tool`` output with its ``tool_call_id``. Taken in turn
        with the chat's turns."""
        limit = self.settings.max_message_chars
        rows = [_appended(chat_id, item, limit) for item in messages]
        await self._ready()
        async with self._runtime.leases.hold(chat_id, self.tenant_id,
                                          self.settings.busy_timeout) as lease:
            return await self._runtime.store.append_messages(lease.chat.id, rows)

    async def delete_message(self, chat_id: str, seq: int) -> bool:
        """Delete one message for real (its seq is not reused); False if there is none."""
        await self._ready()
        async with self._runtime.leases.hold(chat_id, self.tenant_id, self.settings.busy_timeout):
            deleted = await self._runtime.store.delete_message(chat_id, seq)
            self._runtime.cache.discard(chat_id)
        return deleted

    async def fork_chat(self, chat_id: str, *, up_to_seq: int | None = None) -> str:
        """A new chat (``parent_id`` = this one) with the same settings and a copy of the
        ok messages up to ``up_to_seq`` (default: all of them); returns its id."""
        source = await self.get_chat(chat_id)
        if up_to_seq is None:
            up_to_seq = source.message_count
        if not 0 <= up_to_seq <= source.message_count:
            raise InvalidInput(f"up_to_seq must be within 0..{source.message_count}")
        chat = replace(source, id=str(uuid.uuid4()), parent_id=source.id, created_at=utcnow(),
                       updated_at=utcnow(), archived_at=None, expires_at=None)
        await self._runtime.store.fork_chat(chat, up_to_seq)
        return chat.id

    # reading for the service and the CLI: pages, health, keys, markdown ---------------

    @property
    def keys(self) -> AsyncApiKeys:
        """API keys as a resource (every tenant's): create, list, revoke, verify."""
        return AsyncApiKeys(self._ready)

    @property
    def runs(self) -> AsyncRuns:
        """Turns that outlive their caller: detached streams that can be followed again,
        and turns run in the background (see :mod:`chatsessions.runs`)."""
        return AsyncRuns(self)

    async def messages(
        self, chat_id: str, *, after_seq: int = 0, limit: int | None = 100
    ) -> list[Message]:
        """One page of the stored messages, whatever their status: those with seq above
        ``after_seq``, in order, at most ``limit`` (None: all). The next page starts after
        the last seq returned. The system prompt is the chat's field, not a message here."""
        if after_seq < 0:
            raise InvalidInput("after_seq must be 0 or more")
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be at least 1")
        await self.get_chat(chat_id)
        return await self._runtime.store.messages(chat_id, after_seq=after_seq, limit=limit)

    async def get_message(self, chat_id: str, seq: int) -> Message | None:
        """The stored message ``seq`` (1 and up) of the chat, whatever its status; None if
        there is none (never was, or deleted)."""
        if seq < 1:
            await self.get_chat(chat_id)
            return None
        found = await self.messages(chat_id, after_seq=seq - 1, limit=1)
        return found[0] if found and found[0].seq == seq else None

    async def ping(self) -> None:
        """A health check: return once the database has answered a trivial query; raise
        (the driver's error) if it cannot."""
        store = await self._ready()
        await store.ping()

    async def export_markdown(self, chat_id: str) -> str:
        """The chat as Markdown for reading (every stored message, failed turns and earlier
        answers marked); :meth:`export_chat` is the lossless form."""
        chat = await self.get_chat(chat_id)
        return export_markdown(chat, await self.history(chat_id, include_failed=True))


async def _stored(turn: AsyncGenerator[str | ToolCallDelta | Message, None]) -> Message:
    """Run a turn that yields no deltas to its end: the stored answer it yields last."""
    answer: Message | None = None
    async with aclosing(turn):
        async for item in turn:
            if isinstance(item, Message):
                answer = item
    assert answer is not None
    return answer


async def _parsing(run: AsyncGenerator[Any, None], fmt: ResponseFormat,
                   spec: FormatSpec | None) -> AsyncGenerator[Any, None]:
    """``run``, its final text answer given back with ``parsed`` read against ``fmt``
    (into ``spec`` when that is a pydantic model class). An answer that calls tools is
    not the final one, and is passed on as it is."""
    async with aclosing(run):
        async for item in run:
            if (isinstance(item, Message) and item.role is Role.ASSISTANT
                    and not item.tool_calls and fmt.structured):
                item = replace(item, parsed=(
                    parse_into(spec, item.content)
                    if isinstance(spec, type) and issubclass(spec, BaseModel)
                    else parse_answer(fmt, item.content)))
            yield item


def _policy(value: ContextPolicy | str | None) -> ContextPolicy | None:
    return None if value is None else check_context_policy(value)


def _added_role(role: Role | str) -> Role:
    if role not in (Role.USER, Role.ASSISTANT):
        raise InvalidInput(f"only user and assistant messages can be added, not {role}")
    return Role(role)


@dataclass(frozen=True, slots=True)
class _Loop:
    """One send's tools: what is offered, the functions it may run, how many times."""

    tools: ToolOptions | None
    functions: dict[str, FunctionTool]
    max_rounds: int


def _appended(chat_id: str, item: tuple[Role, str] | Mapping[str, Any],
              max_chars: int) -> Message:
    """One message for :meth:`AsyncChatSessions.append_messages`, checked."""
    if not isinstance(item, Mapping):
        role, content = item
        return Message(chat_id, 0, _added_role(role),
                       check_text(content, field="message", max_chars=max_chars))
    if item.get("role") not in ("user", "assistant", "tool"):
        raise InvalidInput(f"only user, assistant and tool messages can be added, not "
                           f"{item.get('role')}")
    shown = check_chat_message(item, max_chars)
    calls = shown.get("tool_calls")
    if not calls and shown["role"] != "tool" and not shown["content"].strip():
        raise InvalidInput("message must not be empty")
    return Message(chat_id, 0, Role(shown["role"]), shown["content"] or "",
                   tool_calls=tuple(ToolCall.from_openai(c) for c in calls) if calls else None,
                   tool_call_id=shown.get("tool_call_id"))


def request_hash(chat: Chat) -> str:
    """What makes two chat creations "the same request" for idempotency."""
    fields: list[Any] = [chat.system_prompt, chat.title, chat.backend, chat.model,
                         chat.params, chat.metadata]
    if chat.context_policy is not ContextPolicy.TRIM:  # hashes stored before it stay valid
        fields.append(chat.context_policy.value)
    if chat.tools:
        fields.append([tool.to_dict() for tool in chat.tools])
    if chat.tool_choice is not None:
        fields.append({"tool_choice": chat.tool_choice})
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
