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
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from chatsessions.engine.content import PartSpec
from chatsessions.engine.live import Step
from chatsessions.engine.structured import FormatSpec
from chatsessions.engine.tools import ToolSpec
from chatsessions.errors import BackendError, RunNotFound
from chatsessions.types import ContextPolicy, GenerationParams, Role, Run, TurnStatus, utcnow
from chatsessions.validation import check_metadata, check_params, check_text

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
        sessions = self._sessions
        runtime = sessions._runtime
        turn = sessions.stream(chat_id, text, params=params, idempotency_key=idempotency_key,
                               system_prompt=system_prompt, if_message_count=if_message_count,
                               tools=tools, tool_choice=tool_choice,
                               parallel_tool_calls=parallel_tool_calls,
                               response_format=response_format,
                               context_policy=context_policy)
        log = runtime.live.start(turn, chat_id, lambda: self._answer_seq(chat_id))
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
        system_prompt: str | None = None,
        if_message_count: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Run:
        """Run one turn in the background (options as for :meth:`AsyncChatSessions.send`)
        and return its record at once, ``queued``; ``metadata`` is kept with it. The turn
        is answered and stored as any other; the run ends ``completed`` (``seq`` is the
        answer's), ``failed`` (``error`` says why) or ``cancelled``. If this process dies,
        the run is failed once its expiry passes (``Settings.lease_ttl``)."""
        sessions = self._sessions
        check_text(text, field="message", max_chars=sessions.settings.max_message_chars)
        checked = check_params(params)
        kept = check_metadata(metadata)
        chat = await sessions.get_chat(chat_id)
        runtime = sessions._runtime
        background = runtime.background
        run = Run(id=uuid.uuid4().hex, tenant_id=sessions.tenant_id, chat_id=chat.id,
                  owner=runtime.owner, metadata=kept,
                  expires_at=utcnow() + background.expiry())
        await runtime.store.create_run(run)
        background.launch(run, sessions.stream(
            chat.id, text, params=checked, system_prompt=system_prompt,
            if_message_count=if_message_count), lambda: self._answer_seq(chat.id))
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
        """:meth:`follow` for a background run: its steps after ``after``, waiting for the
        run to start if it is queued; a run that ended before its turn began raises."""
        run = await self.get(run_id)
        background = self._sessions._runtime.background
        while run.seq is None and not run.status.finished:
            log = background.log(run.id)
            if log is not None:
                async for step in log.follow(after):
                    yield step
                await background.settled(run.id)  # read after the end: the run says so
                return
            await asyncio.sleep(STORAGE_POLL)
            run = await self.get(run_id)
        if run.seq is None:
            raise BackendError(run.error or f"the run ended {run.status.value}")
        async for step in self.follow(run.chat_id, run.seq, after=after):
            yield step
        await background.settled(run.id)

    # -------------------------------------------------------------------------------

    async def _find(self, run_id: str) -> Run:
        store = await self._sessions._ready()
        found = None
        if 0 < len(run_id) <= 64 and run_id.isascii():
            found = await store.get_run(run_id, self._sessions.tenant_id)
        if found is None:
            raise RunNotFound(f"No run with id '{run_id[:100]}'.")
        return found

    async def _answer_seq(self, chat_id: str) -> int:
        """The seq the answer of the turn holding the chat will get: the turn has stored
        its question (and any summary), nothing else can be written meanwhile. Known to
        the turn while it calls the model; read from the chat otherwise (a replayed one)."""
        known = self._sessions._runtime.answering.get(chat_id)
        if known is not None:
            return known
        return (await self._sessions.get_chat(chat_id)).message_count + 1

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

    def start(
        self,
        chat_id: str,
        text: str | Sequence[PartSpec],
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        system_prompt: str | None = None,
        if_message_count: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Run:
        return self._runner.call(self.aio.start(
            chat_id, text, params=params, system_prompt=system_prompt,
            if_message_count=if_message_count, metadata=metadata))

    def get(self, run_id: str) -> Run:
        return self._runner.call(self.aio.get(run_id))

    def cancel(self, run_id: str) -> Run:
        return self._runner.call(self.aio.cancel(run_id))

    def follow_run(self, run_id: str, *, after: int = -1) -> Iterator[Step]:
        return self._runner.iterate(self.aio.follow_run(run_id, after=after))


for _name in ("stream", "follow", "start", "get", "cancel", "follow_run"):
    getattr(Runs, _name).__doc__ = getattr(AsyncRuns, _name).__doc__

