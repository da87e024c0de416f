"""Turns that outlive their caller, as a resource of the public API: ``sessions.runs``.

* :meth:`AsyncRuns.stream` is :meth:`AsyncChatSessions.stream` detached from its reader:
  a reader that goes away (a dropped connection) stops only itself, the turn goes on and
  is stored once, and :meth:`AsyncRuns.follow` picks it up again from any step.
* :meth:`AsyncRuns.start` runs a turn in the background and returns at once; its
  :class:`Run` record, stored, tells any replica where it stands (:meth:`AsyncRuns.get`)
  and takes a cancel from any of them (:meth:`AsyncRuns.cancel`).

The steps of a turn in flight live in the memory of the process running it. Elsewhere, or
once it is forgotten there, a turn is read back from storage when it ends: its answer as
one step (the deltas are not stored), after waiting while it is still in flight.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from chatsessions.engine.content import PartSpec, check_content
from chatsessions.engine.live import AnswerSeq, Step
from chatsessions.engine.structured import FormatSpec
from chatsessions.engine.tools import ToolSpec
from chatsessions.engine.turn import check_sees_images, pending_calls
from chatsessions.errors import (
    BackendError,
    ChatMoved,
    InvalidInput,
    RunNotFound,
    ToolCallsPending,
)
from chatsessions.types import (
    Chat,
    ContextPolicy,
    GenerationParams,
    Message,
    Role,
    Run,
    RunStatus,
    ToolCallDelta,
    TurnStatus,
    utcnow,
)
from chatsessions.validation import check_metadata

if TYPE_CHECKING:
    from chatsessions.sessions import AsyncChatSessions

T = TypeVar("T")

#: seconds between two looks at storage while waiting for a turn run elsewhere
STORAGE_POLL = 0.25

__all__ = ["AsyncRuns", "Runs", "Step"]


class AsyncRuns:
    """Detached and background turns of one tenant's :class:`AsyncChatSessions`."""

    def __init__(self, sessions: AsyncChatSessions) -> None:
        self._sessions = sessions

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
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> AsyncGenerator[Step, None]:
        """:meth:`AsyncChatSessions.stream` as numbered steps, the turn detached from the
        reader: closing this generator early leaves the turn running to its end (stored
        once); :meth:`follow` with the steps' ``seq`` reads on from any step. Errors before
        the first step are raised as the plain stream raises them."""
        turn = self._sessions._streamed(
            chat_id, text, params, idempotency_key, system_prompt, if_message_count, tools,
            tool_choice, parallel_tool_calls, None, response_format, context_policy)
        async for step in self._detach(chat_id, turn, 0):
            yield step

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
        system_prompt: str | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> AsyncGenerator[Step, None]:
        """:meth:`AsyncChatSessions.stream_tool_results` detached from the reader, as
        :meth:`stream` is: the steps' ``seq`` is the answer's (the outputs are stored with
        it, just before it)."""
        turn = self._sessions._tool_results(
            chat_id, results, params, tools, tool_choice, parallel_tool_calls,
            idempotency_key, None, system_prompt, response_format, context_policy,
            streaming=True)
        async for step in self._detach(chat_id, turn, len(results)):
            yield step

    async def _detach(self, chat_id: str, turn: AsyncGenerator[Any, None],
                      outputs: int) -> AsyncIterator[Step]:
        log = self._sessions._runtime.live.start(turn, chat_id,
                                                 self._answer_seq(chat_id, outputs))
        await log.started()
        async for step in log.follow():
            yield step

    async def follow(
        self, chat_id: str, seq: int, *, after: int = -1
    ) -> AsyncGenerator[Step, None]:
        """The steps after ``after`` of the turn whose answer is (or will be) message
        ``seq``: as they come while it runs in this process, else read back from storage
        once it has ended, ``rebuilt``: the answer's text as step 0 and the answer as step 1,
        or when ``after`` is 0 or more (the reader has seen deltas), the answer alone as
        step ``after + 1``. A failed turn raises its error; :class:`RunNotFound` if no
        turn answers there."""
        log = self._sessions._runtime.live.find(chat_id, seq)
        if log is not None:
            await self._sessions.get_chat(chat_id)  # the tenant's own chats only
            steps: AsyncIterator[Step] = log.follow(after)
        else:
            steps = self._stored(chat_id, seq, after)
        async for step in steps:
            yield step

    async def start(
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
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Run:
        """Run one turn in the background (options as for :meth:`AsyncChatSessions.send`:
        tools, images, ``response_format``, ``context_policy``...) and return its record at
        once, ``queued``; ``metadata`` is kept with it. The turn is answered and stored as
        any other; the run ends ``completed`` (``seq`` is the answer's, which may call
        tools: :meth:`start_tool_results` goes on), ``failed`` (``error`` says why) or
        ``cancelled``. If this process dies, the run is failed once its expiry passes
        (``Settings.lease_ttl``).

        What the turn would refuse before storing anything is refused here, before the
        run is stored: bad options, images the chat's backend cannot see, a chat waiting
        for tool outputs (:class:`ToolCallsPending`), one that no longer holds
        ``if_message_count`` messages (:class:`ChatMoved`)."""
        sessions = self._sessions
        _, parts = check_content(text, field="message",
                                 max_chars=sessions.settings.max_message_chars)
        turn = sessions._streamed(
            chat_id, text, params, idempotency_key, system_prompt, if_message_count, tools,
            tool_choice, parallel_tool_calls, None, response_format, context_policy)
        chat = await self._ready_chat(chat_id, None, if_message_count)
        check_sees_images(sessions.get_backend(chat.backend), parts)
        return await self._launch(chat, turn, 0, metadata)

    async def start_tool_results(
        self,
        chat_id: str,
        results: Mapping[str, str],
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Run:
        """:meth:`AsyncChatSessions.send_tool_results` in the background, as :meth:`start`
        runs a turn: the outputs of every call the chat waits for, then the model's next
        answer (``seq``: the answer's; the outputs are stored with it). Outputs that do
        not match the calls waiting are refused here (:class:`InvalidInput`)."""
        turn = self._sessions._tool_results(
            chat_id, results, params, tools, tool_choice, parallel_tool_calls,
            idempotency_key, None, system_prompt, response_format, context_policy,
            streaming=True)
        chat = await self._ready_chat(chat_id, results, None)
        return await self._launch(chat, turn, len(results), metadata)

    async def _ready_chat(self, chat_id: str, results: Mapping[str, str] | None,
                          count: int | None) -> Chat:
        """The chat, if the turn (``results``: the round) could start on it now. The turn
        checks again once it holds the chat: a race meanwhile fails the run instead."""
        sessions = self._sessions
        chat = await sessions.get_chat(chat_id)
        if count is not None and chat.message_count != count:
            raise ChatMoved(chat.id)
        history = await sessions._runtime.settled_history(chat)
        waiting = [call.id for call in pending_calls(history.messages)]
        if results is None and waiting:
            raise ToolCallsPending(chat.id, waiting)
        if results is not None and sorted(results) != sorted(waiting):
            raise InvalidInput("the outputs must be those of the calls the chat waits for: "
                               + (", ".join(waiting) or "none"))
        return chat

    async def _launch(self, chat: Chat, turn: AsyncGenerator[Any, None], outputs: int,
                      metadata: dict[str, Any] | None) -> Run:
        sessions = self._sessions
        kept = check_metadata(metadata)
        runtime = sessions._runtime
        background = runtime.background
        run = Run(id=uuid.uuid4().hex, tenant_id=sessions.tenant_id, chat_id=chat.id,
                  owner=runtime.owner, metadata=kept,
                  expires_at=utcnow() + background.expiry())
        await runtime.store.create_run(run)
        background.launch(run, turn, self._answer_seq(chat.id, outputs))
        return run

    async def get(self, run_id: str) -> Run:
        """Where the run stands, from storage (any replica may ask); a run whose process
        died is failed here, once its expiry has passed."""
        store = await self._sessions._ready()
        run = await self._find(run_id)
        if not run.status.finished and run.expires_at is not None and (
                run.expires_at < utcnow()):
            await store.fail_abandoned_runs(utcnow(), run_id=run.id)
            run = await self._find(run_id)
        return run

    async def cancel(self, run_id: str) -> Run:
        """Stop the run's model call and mark the turn failed and the run ``cancelled``.
        On the replica running it, done when this returns; asked of another, that one
        stops it within a second (the run is returned with ``cancel_requested``)."""
        run = await self.get(run_id)
        if run.status.finished:
            return run
        runtime = self._sessions._runtime
        await runtime.store.cancel_run(run.id, run.tenant_id)
        if runtime.background.cancel(run.id):
            await runtime.background.settled(run.id)
        return await self.get(run_id)

    async def follow_run(self, run_id: str, *, after: int = -1) -> AsyncGenerator[Step, None]:
        """:meth:`follow` for a background run: its steps after ``after`` as they come on
        the replica running it; elsewhere, once it has ended, read back from storage. A
        run that failed or was cancelled raises."""
        run = await self.get(run_id)
        background = self._sessions._runtime.background
        while not run.status.finished:
            log = background.log(run.id)
            if log is not None:
                async for step in log.follow(after):
                    yield step
                await background.settled(run.id)  # read after the end: the run says so
                return
            # run elsewhere: a tool round stores nothing before its end, so wait for it
            await asyncio.sleep(STORAGE_POLL)
            run = await self.get(run_id)
        if run.seq is None or run.status is not RunStatus.COMPLETED:
            raise BackendError(run.error or f"the run ended {run.status.value}")
        async for step in self.follow(run.chat_id, run.seq, after=after):
            yield step

    # -------------------------------------------------------------------------------

    async def _find(self, run_id: str) -> Run:
        store = await self._sessions._ready()
        found = None
        if 0 < len(run_id) <= 64 and run_id.isascii():
            found = await store.get_run(run_id, self._sessions.tenant_id)
        if found is None:
            raise RunNotFound(f"No run with id '{run_id[:100]}'.")
        return found

    def _answer_seq(self, chat_id: str, outputs: int) -> AnswerSeq:
        """How the seq of a turn's answer is known from the first item it yields: a
        stored message's own (a tool round's first output: ``outputs`` are stored, then
        the answer), else the next free one once the turn holds the chat (after its
        question and any summary; a round's outputs are stored with its answer). A text
        turn knows it while it calls the model; otherwise it is read from the chat."""
        runtime = self._sessions._runtime

        async def seq(first: str | ToolCallDelta | Message) -> int:
            if isinstance(first, Message):
                return first.seq + (outputs if first.role is Role.TOOL else 0)
            known = None if outputs else runtime.answering.get(chat_id)
            if known is not None:
                return known
            return (await self._sessions.get_chat(chat_id)).message_count + outputs + 1
        return seq

    async def _stored(self, chat_id: str, seq: int, after: int) -> AsyncIterator[Step]:
        """The turn answering at ``seq``, read back from storage once it has ended."""
        sessions = self._sessions
        settings = sessions.settings
        loop = asyncio.get_running_loop()
        # a turn in flight elsewhere ends, or is failed as abandoned, by then
        deadline = loop.time() + settings.turn_deadline + 2 * settings.lease_ttl
        while True:
            rows = await sessions.messages(chat_id, after_seq=max(seq - 3, 0), limit=4)
            answer = next((m for m in rows if m.seq == seq and m.role is Role.ASSISTANT), None)
            asked = [m for m in rows if m.role is Role.USER and seq - 2 <= m.seq < seq]
            if answer is not None and answer.status is not TurnStatus.FAILED:
                if after < 0:
                    yield Step(0, answer.content, seq, rebuilt=True)
                yield Step(max(after, 0) + 1, answer, seq, rebuilt=True)
                return
            if answer is not None:
                raise BackendError(answer.error or "the turn failed")
            if asked and asked[-1].status is TurnStatus.FAILED:
                raise BackendError(asked[-1].error or "the turn failed")
            if not asked or asked[-1].status is not TurnStatus.PENDING:
                raise RunNotFound(f"No turn of chat {chat_id} answers at {seq}.")
            if loop.time() > deadline:
                raise BackendError("the turn is still unfinished")
            await asyncio.sleep(STORAGE_POLL)


class Runner(Protocol):
    """The sync facade's loop: runs coroutines and async iterators from sync code."""

    def call(self, coro: Coroutine[Any, Any, T], /) -> T: ...

    def iterate(self, items: AsyncIterator[T], /) -> Iterator[T]: ...


class Runs:
    """:class:`AsyncRuns`, synchronously (``ChatSessions().runs``). Detached and
    background turns run on the facade's loop thread, so they go on between calls."""

    def __init__(self, aio: AsyncRuns, runner: Runner) -> None:
        self.aio = aio
        self._runner = runner

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
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Iterator[Step]:
        return self._runner.iterate(self.aio.stream(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            response_format=response_format, context_policy=context_policy))

    def follow(self, chat_id: str, seq: int, *, after: int = -1) -> Iterator[Step]:
        return self._runner.iterate(self.aio.follow(chat_id, seq, after=after))

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
        system_prompt: str | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Iterator[Step]:
        return self._runner.iterate(self.aio.stream_tool_results(
            chat_id, results, params=params, tools=tools, tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls, idempotency_key=idempotency_key,
            system_prompt=system_prompt, response_format=response_format,
            context_policy=context_policy))

    def start(
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
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Run:
        return self._runner.call(self.aio.start(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            response_format=response_format, context_policy=context_policy,
            metadata=metadata))

    def start_tool_results(
        self,
        chat_id: str,
        results: Mapping[str, str],
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Run:
        return self._runner.call(self.aio.start_tool_results(
            chat_id, results, params=params, tools=tools, tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls, idempotency_key=idempotency_key,
            system_prompt=system_prompt, response_format=response_format,
            context_policy=context_policy, metadata=metadata))

    def get(self, run_id: str) -> Run:
        return self._runner.call(self.aio.get(run_id))

    def cancel(self, run_id: str) -> Run:
        return self._runner.call(self.aio.cancel(run_id))

    def follow_run(self, run_id: str, *, after: int = -1) -> Iterator[Step]:
        return self._runner.iterate(self.aio.follow_run(run_id, after=after))


for _name in ("stream", "stream_tool_results", "follow", "start", "start_tool_results", "get",
              "cancel", "follow_run"):
    getattr(Runs, _name).__doc__ = getattr(AsyncRuns, _name).__doc__

