"""A turn (DESIGN §4): serialize per chat, store the user message, build the context, call
the model, store the answer, or record the failure. Nothing about turns lives elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from chatsessions.backends import Backend, Completion
from chatsessions.backends.base import ChatMessages, ToolCallDelta, conversation
from chatsessions.engine import summary
from chatsessions.engine.cache import History
from chatsessions.engine.context import check_fits, newest_that_fit, summary_cut, trim_start
from chatsessions.engine.leases import Lease
from chatsessions.engine.runtime import Core
from chatsessions.engine.summary import Refresh
from chatsessions.errors import (
    BackendError,
    BackendTimeout,
    ChatMoved,
    ContextTooLong,
    InvalidInput,
)
from chatsessions.types import (
    Chat,
    ContextPolicy,
    GenerationParams,
    Message,
    Role,
    TurnStatus,
)

log = logging.getLogger(__name__)

#: Tokens the chat template spends to open the assistant's answer.
ANSWER_PRIMER_TOKENS = 3


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """What one call may change about its turn (already validated by the caller)."""

    params: GenerationParams | None = None
    idempotency_key: str | None = None
    #: answer under this prompt instead of the chat's own (which stays as stored)
    system_prompt: str | None = None
    #: run only if the chat still holds exactly this many messages when its turn comes
    if_message_count: int | None = None


async def run_turn(
    core: Core,
    tenant_id: str,
    chat_id: str,
    text: str,
    options: TurnOptions,
    *,
    streaming: bool,
) -> AsyncGenerator[str | Message, None]:
    """Yield text deltas (when streaming), then the stored assistant message."""
    settings = core.settings
    idempotency_key = options.idempotency_key
    # Keyed and conditional turns look at the database first, so they take the lease first.
    presumed = (core.presumed_chat(chat_id)
                if idempotency_key is None and options.if_message_count is None else None)
    async with core.leases.hold(chat_id, tenant_id, settings.busy_timeout,
                                presumed=presumed) as lease:
        while True:
            chat = lease.chat
            expected = options.if_message_count
            if expected is not None and chat.message_count != expected:
                raise ChatMoved(chat_id)
            if options.system_prompt is not None:
                chat = replace(chat, system_prompt=options.system_prompt)
            if idempotency_key is not None:
                earlier = await core.store.message_by_idempotency_key(chat.id, idempotency_key)
                if earlier is not None:
                    answer = await _replay(core, earlier, text)
                    if streaming:
                        yield answer.content
                    yield answer
                    return
            backend = core.backend(chat.backend)
            gen_params = GenerationParams.model_validate(chat.params).merged(options.params)
            history = await core.visible_history(chat)
            try:
                context = plan_context(core, chat, history, text, backend, gen_params)
            except InvalidInput:
                if lease.taken:
                    raise
                await core.leases.take(lease)  # judge by the chat as stored, not presumed
                continue
            if lease.taken:
                user = await core.store.add_user_message(chat.id, text,
                                                         idempotency_key=idempotency_key)
                break
            started_with = await core.leases.begin_turn(lease, text)
            if started_with is not None:
                user = started_with
                break
            await core.leases.take(lease)  # the chat moved on elsewhere: look again
        history.chat = None  # changes now; known again only once the answer is stored
        circuit = core.circuit(backend.name)
        started = time.perf_counter()
        summaries: list[Message] = []
        try:
            circuit.before_call()
            if context.refresh is not None:
                written = await summary.write(backend, chat.id, chat.model, context.refresh,
                                              settings.turn_deadline)
                summaries = await core.store.append_messages(chat.id, [written])
                context = context.summarized(summaries[0], backend, chat.model)
            completion: Completion | None = None
            shown = context.messages
            calls = _call_model(backend, shown, gen_params, chat.model, streaming,
                                settings.turn_deadline, chat.id)
            async with aclosing(calls):
                async for item in calls:
                    if isinstance(item, str):
                        yield item
                    else:
                        completion = item
            if completion is None:
                raise BackendError("the model ended without an answer")
            circuit.success()
            answer = answer_message(chat.id, completion, started,
                                    context_messages=len(shown),
                                    context_tokens=context.tokens)
            stored = await core.store.complete_turn(user, answer, lease_owner=lease.owner)
            lease.released = True
        except BackendError as exc:
            circuit.failure(exc)
            await _fail(core, lease, user, exc, history)
            raise
        except BaseException as exc:  # cancelled, consumer gone, storage trouble
            circuit.abandon()
            reason = "cancelled before the answer was stored" if isinstance(
                exc, (asyncio.CancelledError, GeneratorExit)) else f"internal error: {exc!r}"
            await asyncio.shield(_fail(core, lease, user, BackendError(reason), history))
            raise
        core.cache.grew(chat.id, history.add(
            [replace(user, status=TurnStatus.OK), *summaries, stored]))
        history.chat = replace(lease.chat, message_count=stored.seq,
                               updated_at=stored.created_at)
    yield stored


def answer_message(chat_id: str, completion: Completion, started: float,
                   **fields: Any) -> Message:
    """The assistant message a completion becomes, timed from ``started``
    (``time.perf_counter()`` before the call); ``fields`` add what the caller knows."""
    return Message(
        chat_id=chat_id, seq=0, role=Role.ASSISTANT, content=completion.text.strip(),
        model=completion.model, prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
        latency_ms=int((time.perf_counter() - started) * 1000), **fields,
    )


async def _call_model(
    backend: Backend,
    context: ChatMessages,
    params: GenerationParams,
    model: str,
    streaming: bool,
    deadline: float,
    chat_id: str,
) -> AsyncGenerator[str | Completion, None]:
    """The backend call under one total deadline (each wait gets what is left of it, so no
    timeout scope ever spans a ``yield``)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    parts: list[str] = []
    token = conversation.set(chat_id)
    try:
        try:
            if not streaming:
                async with asyncio.timeout_at(end):  # no task per call, unlike wait_for
                    completion = await backend.complete(context, params, model)
                yield completion
                return
            deltas = backend.stream(context, params, model)
            async with aclosing(deltas):
                while True:
                    try:
                        async with asyncio.timeout_at(end):
                            item = await anext(deltas)
                    except StopAsyncIteration:
                        return
                    if isinstance(item, ToolCallDelta):
                        continue  # no tools offered on this path yet
                    if isinstance(item, str):
                        parts.append(item)
                    yield item
        except TimeoutError:
            raise BackendTimeout(f"no answer within the {deadline:g}s deadline",
                                 partial="".join(parts)) from None
    finally:
        with contextlib.suppress(ValueError):  # closed from another context
            conversation.reset(token)


async def _replay(core: Core, earlier: Message, text: str) -> Message:
    """The stored outcome of a request already made with this idempotency key."""
    if earlier.content != text:
        raise InvalidInput("this Idempotency-Key was already used with a different message")
    if earlier.status is TurnStatus.OK:
        # the answer follows the question, or the summary written for it
        following = await core.store.messages(earlier.chat_id, after_seq=earlier.seq, limit=2)
        answer = next((m for m in following if m.role is not Role.SYSTEM), None)
        if answer is not None and answer.role is Role.ASSISTANT:
            return answer
    if earlier.status is TurnStatus.PENDING:  # seen under our lease: its replica died
        await core.store.mark_interrupted(earlier.chat_id, [earlier.seq])
    raise BackendError(f"this request already failed: {earlier.error or 'interrupted'}")


async def _fail(core: Core, lease: Lease, user: Message, exc: BackendError,
                history: History) -> None:
    """Keep the user message, mark the turn failed, keep any partial answer apart."""
    partial = Message(
        chat_id=user.chat_id, seq=0, role=Role.ASSISTANT, content=exc.partial,
        status=TurnStatus.FAILED, error=str(exc),
    ) if exc.partial else None
    try:
        await core.store.fail_turn(user, str(exc), partial, lease_owner=lease.owner)
        lease.released = True
        history.add([replace(user, status=TurnStatus.FAILED)])
    except Exception:
        # Storage is in trouble too: forget the cached entry; recovery fails the pending
        # message once the store is healthy again.
        core.cache.discard(user.chat_id)


@dataclass(slots=True)
class Context:
    """What the model is shown for one turn, and the summary to write first when the
    ``summarize`` policy needs a new one."""

    system: dict[str, str]
    system_tokens: int
    #: tokens for the summary, the history and the new message
    budget: int
    #: the history sent, in whole turns, ending with the new user message; their tokens
    #: and their dicts as the model is shown them
    turns: list[Message]
    counts: list[int]
    views: list[dict[str, str]]
    summary: dict[str, str] | None = None
    summary_tokens: int = 0
    refresh: Refresh | None = None

    @property
    def messages(self) -> list[dict[str, str]]:
        head = [self.system] if self.summary is None else [self.system, self.summary]
        return [*head, *self.views]

    @property
    def tokens(self) -> int:
        """Tokens of the messages shown, by the backend's count."""
        return self.system_tokens + self.summary_tokens + sum(self.counts)

    def keep(self, start: int) -> Context:
        self.turns, self.counts = self.turns[start:], self.counts[start:]
        self.views = self.views[start:]
        return self

    def summarized(self, written: Message, backend: Backend, model: str) -> Context:
        """This context with the summary just written in place of the turns it took in."""
        view = summary.shown(written)
        tokens = backend.count_tokens(view["role"], view["content"], model)
        try:
            start = trim_start(self.turns, self.counts, self.budget - tokens)
        except ContextTooLong:
            raise BackendError(f"the summary took {tokens} tokens and left no room for "
                               "the message; try again") from None
        if start:  # the model wrote more than its reserve; fit what is left
            log.warning("chat %s: a %d-token summary left %d more messages out",
                        written.chat_id, tokens, start)
        self.summary, self.summary_tokens, self.refresh = view, tokens, None
        return self.keep(start)


def plan_context(
    core: Core,
    chat: Chat,
    history: History,
    text: str,
    backend: Backend,
    params: GenerationParams,
    *,
    summarize: bool = True,
) -> Context:
    """The context for a new message ``text``, as the chat's context policy says.

    ``trim``: the system prompt and the newest whole turns that fit the window less the
    reserved answer. ``none``: everything, or ContextTooLong. ``summarize``: the latest
    summary in place of the turns it covers, then the newest turns that fit; when trimming
    would drop turns the summary does not cover, ``refresh`` says what the next summary
    must take in (with ``summarize=False`` those turns are trimmed instead). Raises
    ContextTooLong before anything is stored. Summary rows are never sent as turns.
    """
    model = chat.model
    reserve = params.max_tokens or core.settings.max_output_tokens
    system_tokens = backend.count_tokens("system", chat.system_prompt, model)
    budget = backend.context_window(model) - reserve - system_tokens - ANSWER_PRIMER_TOKENS
    if budget <= 0:
        raise ContextTooLong(
            "the system prompt and the reserved answer already fill the context window")
    policy = chat.context_policy
    latest = _latest_summary(history) if policy is ContextPolicy.SUMMARIZE else None
    previous = history.messages[latest] if latest is not None else None
    after = (previous.covers_seq or 0) if previous is not None else 0
    new_tokens = backend.count_tokens("user", text, model)
    turns, counts, views = _recent_turns(history, after, backend, model, limit=None
                                         if policy is ContextPolicy.NONE
                                         else budget - new_tokens)
    turns.append(Message(chat.id, 0, Role.USER, text))
    counts.append(new_tokens)
    views.append({"role": Role.USER.value, "content": text})
    context = Context({"role": "system", "content": chat.system_prompt}, system_tokens,
                      budget, turns, counts, views)
    if policy is ContextPolicy.NONE:
        check_fits(counts, budget)
        return context
    if policy is ContextPolicy.TRIM:
        return context.keep(trim_start(turns, counts, budget))
    if previous is not None and latest is not None:
        context.summary = summary.shown(previous)
        context.summary_tokens = _count(history, latest, backend, model)
    if not summarize:
        return context.keep(trim_start(turns, counts, budget - context.summary_tokens))
    limit = summary.token_limit(budget)
    cut = summary_cut(turns, counts, budget, context.summary_tokens,
                      backend.count_tokens("system", summary.SHOWN_AS, model) + limit)
    if cut:
        context.refresh = _refresh(backend, model, previous, turns[:cut], counts[:cut], limit)
    return context.keep(cut)


def build_context(
    core: Core,
    chat: Chat,
    history: History,
    text: str,
    backend: Backend,
    params: GenerationParams,
) -> ChatMessages:
    """The messages :func:`plan_context` shows the model, writing no new summary."""
    return plan_context(core, chat, history, text, backend, params, summarize=False).messages


def _refresh(
    backend: Backend,
    model: str,
    previous: Message | None,
    turns: list[Message],
    counts: list[int],
    limit: int,
) -> Refresh:
    """The next summary: the previous one plus ``turns``, or the newest of them that fit one
    request (a long chat switched to ``summarize`` loses its oldest turns, as with trim)."""
    fixed = sum(backend.count_tokens(m["role"], m["content"], model)
                for m in summary.request(previous, []))
    room = backend.context_window(model) - limit - ANSWER_PRIMER_TOKENS - fixed
    if room < summary.MIN_TRANSCRIPT_TOKENS:
        raise ContextTooLong("the model's context window is too small to write a summary in; "
                             "use the 'trim' context policy")
    first = newest_that_fit(counts, room)
    taken = turns[first:]
    if not taken:  # one message longer than a whole request: its beginning
        last = turns[-1]
        keep = max(1, len(last.content) * (room - 8) // counts[-1])
        taken = [replace(last, content=last.content[:keep] + " …")]
    return Refresh(previous, taken, covers_seq=turns[-1].seq, max_tokens=limit)


def _recent_turns(
    history: History, after: int, backend: Backend, model: str, *, limit: int | None
) -> tuple[list[Message], list[int], list[dict[str, str]]]:
    """The history's turns after seq ``after`` (summaries left out) and their tokens, oldest
    first: all of them, or, with a ``limit``, the newest up to the first that takes their
    total past it, which is as far back as trimming can look. So a turn costs the same
    whatever the chat's length, and older messages are never even counted."""
    tokens = history.tokens
    newest = len(tokens)
    while newest and tokens[newest - 1] is None:  # the last turn's rows, not counted yet
        newest -= 1
        _count(history, newest, backend, model)
    if after == 0 and not history.summaries and None not in tokens:
        counted: list[int] = tokens  # type: ignore[assignment]  # no None left
        if limit is None or sum(counted) <= limit:
            # all of it, at list-copy speed
            return list(history.messages), list(counted), list(history.shown)
    turns: list[Message] = []
    counts: list[int] = []
    views: list[dict[str, str]] = []
    total = 0
    for index in range(len(history.messages) - 1, -1, -1):
        message = history.messages[index]
        if message.seq <= after or (limit is not None and total > limit):
            break
        if message.role is not Role.SYSTEM:
            turns.append(message)
            counts.append(_count(history, index, backend, model))
            views.append(history.shown[index])
            total += counts[-1]
    turns.reverse()
    counts.reverse()
    views.reverse()
    return turns, counts, views


def _count(history: History, index: int, backend: Backend, model: str) -> int:
    """The tokens of one history message as it is shown, counted once and cached."""
    count = history.tokens[index]
    if count is None:
        message = history.messages[index]
        shown = summary.shown(message) if message.role is Role.SYSTEM else message.as_openai()
        count = history.tokens[index] = backend.count_tokens(
            shown["role"], shown["content"], model)
    return count


def _latest_summary(history: History) -> int | None:
    """Index of the newest summary row in the history, if any."""
    for index in range(len(history.messages) - 1, -1, -1):
        message = history.messages[index]
        if message.role is Role.SYSTEM and message.covers_seq is not None:
            return index
    return None
