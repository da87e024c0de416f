"""A turn (DESIGN §4), top to bottom: serialize per chat, store the user message, plan
the context (``context.py``), call the model (``model_call.py``), store the answer, or
record the failure. Nothing about turns lives elsewhere."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from chatsessions.backends import Backend
from chatsessions.engine import summary
from chatsessions.engine.cache import History
from chatsessions.engine.context import plan_context
from chatsessions.engine.leases import Lease
from chatsessions.engine.runtime import Runtime
from chatsessions.errors import BackendError, ChatMoved, InvalidInput, ToolCallsPending
from chatsessions.types import (
    Chat,
    Completion,
    ContentPart,
    ContextPolicy,
    GenerationParams,
    Message,
    ResponseFormat,
    Role,
    ToolCall,
    ToolCallDelta,
    ToolOptions,
    TurnStatus,
)


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """What one call may change about its turn (already validated by the caller)."""

    params: GenerationParams | None = None
    idempotency_key: str | None = None
    #: answer under this prompt instead of the chat's own (which stays as stored)
    system_prompt: str | None = None
    #: run only if the chat still holds exactly this many messages when its turn comes
    if_message_count: int | None = None
    #: this call's tools (its tools replace the chat's; None: the chat's)
    tools: ToolOptions | None = None
    #: the new message's content as parts, when it holds images (``text`` is their text)
    parts: tuple[ContentPart, ...] | None = None
    #: the shape the answer must take (None: the model's default, text)
    response_format: ResponseFormat | None = None
    #: this call's context policy instead of the chat's (which stays as stored)
    context_policy: ContextPolicy | None = None


async def run_turn(
    runtime: Runtime,
    tenant_id: str,
    chat_id: str,
    text: str,
    options: TurnOptions,
    *,
    streaming: bool,
) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
    """Yield text deltas and tool-call pieces (when streaming), then the stored assistant
    message. An answer that calls tools is stored like any other: it ends the model call
    and the chat then waits for the calls' outputs (``tool_round.py``)."""
    settings = runtime.settings
    store = runtime.store
    idempotency_key = options.idempotency_key
    # 1. Serialize. Keyed and conditional turns look at the database first, so they take
    # the lease first; others presume the chat as this process's last turn left it.
    presumed = (runtime.presumed_chat(chat_id)
                if idempotency_key is None and options.if_message_count is None else None)
    async with runtime.leases.hold(chat_id, tenant_id, settings.busy_timeout,
                                   presumed=presumed) as lease:
        while True:
            chat = lease.chat
            expected = options.if_message_count
            if expected is not None and chat.message_count != expected:
                raise ChatMoved(chat_id)
            if options.system_prompt is not None:
                chat = replace(chat, system_prompt=options.system_prompt)
            if options.context_policy is not None:
                chat = replace(chat, context_policy=options.context_policy)
            # 2. A repeated request gets the stored outcome.
            if idempotency_key is not None:
                earlier = await store.message_by_idempotency_key(chat.id, idempotency_key)
                if earlier is not None:
                    answer = await _replay(runtime, earlier, text)
                    if streaming:
                        yield answer.content
                    yield answer
                    return
            # 3. Plan the context (refused before anything is stored if it cannot fit).
            backend = runtime.models.backend(chat.backend)
            check_sees_images(backend, options.parts)
            gen_params = GenerationParams.model_validate(chat.params).merged(options.params)
            history = await runtime.visible_history(chat)
            waiting = pending_calls(history.messages)
            if waiting:  # cached rows: judged again by the stored chat before refusing
                if not lease.taken:
                    await runtime.leases.take(lease)
                    continue
                raise ToolCallsPending(chat.id, [call.id for call in waiting])
            try:
                context = plan_context(chat, history, text, backend, gen_params,
                                       max_output_tokens=settings.max_output_tokens,
                                       parts=options.parts)
            except InvalidInput:
                if lease.taken:
                    raise
                await runtime.leases.take(lease)  # judge by the chat as stored, not presumed
                continue
            # 4. Store the user message (pending), taking a presumed lease with it.
            user = await _store_question(runtime, lease, text, idempotency_key,
                                         options.parts)
            if user is not None:
                break
            await runtime.leases.take(lease)  # the chat moved on elsewhere: look again
        history.chat = None  # changes now; known again only once the answer is stored
        started = time.perf_counter()
        summaries: list[Message] = []
        try:
            # 5. A summary first, if the policy needs a new one; then the answer.
            if context.refresh is not None:
                written = await summary.write(runtime.models, backend, chat.id, chat.model,
                                              context.refresh)
                summaries = await store.append_messages(chat.id, [written])
                context = context.summarized(summaries[0], backend, chat.model)
            shown = context.messages
            completion: Completion | None = None
            runtime.answering[chat.id] = (summaries[-1] if summaries else user).seq + 1
            try:
                async with aclosing(runtime.models.call(
                        backend, shown, gen_params, chat.model, streaming=streaming,
                        chat_id=chat.id, tools=offered(chat, options.tools),
                        response_format=options.response_format)) as calls:
                    async for item in calls:
                        if isinstance(item, Completion):
                            completion = item
                        else:
                            yield item
            finally:
                runtime.answering.pop(chat.id, None)
            assert completion is not None  # a call ends with its Completion or raises
            # 6. Store the answer; the same write ends the turn and releases the lease.
            answer = answer_message(chat.id, completion, started,
                                    context_messages=len(shown),
                                    context_tokens=context.tokens)
            stored = await runtime.leases.release_with(
                lease, lambda owner: store.complete_turn(user, answer, lease_owner=owner))
        except BackendError as exc:
            await _fail(runtime, lease, user, exc, history)
            raise
        except BaseException as exc:  # cancelled, consumer gone, storage trouble
            reason = "cancelled before the answer was stored" if isinstance(
                exc, (asyncio.CancelledError, GeneratorExit)) else f"internal error: {exc!r}"
            await asyncio.shield(_fail(runtime, lease, user, BackendError(reason), history))
            raise
        runtime.cache.grew(chat.id, history.add(
            [replace(user, status=TurnStatus.OK), *summaries, stored]))
        history.chat = replace(lease.chat, message_count=stored.seq,
                               updated_at=stored.created_at)
    yield stored


async def _store_question(runtime: Runtime, lease: Lease, text: str,
                          idempotency_key: str | None,
                          parts: tuple[ContentPart, ...] | None) -> Message | None:
    """Store the user message, pending: the one place a turn writes it. On a presumed
    lease the same write takes the lease; None if the chat was not as presumed."""
    if lease.taken:
        return await runtime.store.add_user_message(lease.chat.id, text,
                                                    idempotency_key=idempotency_key,
                                                    parts=parts)
    return await runtime.leases.take_with(
        lease, lambda owner, until: runtime.store.begin_turn(lease.chat, owner, until, text,
                                                             parts=parts))


def answer_message(chat_id: str, completion: Completion, started: float,
                   **fields: Any) -> Message:
    """The assistant message a completion becomes, timed from ``started``
    (``time.perf_counter()`` before the call); ``fields`` add what the caller knows."""
    return Message(
        chat_id=chat_id, seq=0, role=Role.ASSISTANT, content=completion.text.strip(),
        model=completion.model, prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
        latency_ms=int((time.perf_counter() - started) * 1000),
        tool_calls=completion.tool_calls or None, **fields,
    )


def check_sees_images(backend: Backend, parts: tuple[ContentPart, ...] | None) -> None:
    """Refuse images, before anything is stored, on a backend that says it cannot see
    them (``sees_images = False``; backends without the attribute are asked)."""
    if parts is not None and getattr(backend, "sees_images", True) is False:
        raise InvalidInput(f"the {backend.name} backend cannot see images: send them on "
                           "a chat with the openai backend (a vision model on any "
                           "OpenAI-compatible server), or send text")


def offered(chat: Chat, tools: ToolOptions | None) -> ToolOptions | None:
    """What a model call on ``chat`` offers: the call's tools, else the chat's."""
    kept = ToolOptions(chat.tools, chat.tool_choice)
    if tools is None:
        return kept if chat.tools else None
    return kept.merged(tools)


def pending_calls(history: Sequence[Message]) -> list[ToolCall]:
    """The calls of the last answer still without an output (outputs follow their
    answer; summaries between are skipped). Looks back only past the last answer."""
    answered: set[str] = set()
    for index in range(len(history) - 1, -1, -1):
        message = history[index]
        if message.role is Role.TOOL:
            answered.add(message.tool_call_id or "")
        elif message.role is Role.ASSISTANT:
            return [call for call in message.tool_calls or () if call.id not in answered]
        elif message.role is Role.USER:
            return []
    return []


async def _replay(runtime: Runtime, earlier: Message, text: str) -> Message:
    """The stored outcome of a request already made with this idempotency key."""
    if earlier.content != text:
        raise InvalidInput("this Idempotency-Key was already used with a different message")
    if earlier.status is TurnStatus.OK:
        # the answer follows the question, or the summary written for it
        following = await runtime.store.messages(earlier.chat_id, after_seq=earlier.seq, limit=2)
        answer = next((m for m in following if m.role is not Role.SYSTEM), None)
        if answer is not None and answer.role is Role.ASSISTANT:
            return answer
    if earlier.status is TurnStatus.PENDING:  # seen under our lease: its replica died
        await runtime.store.mark_interrupted(earlier.chat_id, [earlier.seq])
    raise BackendError(f"this request already failed: {earlier.error or 'interrupted'}")


async def _fail(runtime: Runtime, lease: Lease, user: Message, exc: BackendError,
                history: History) -> None:
    """Keep the user message, mark the turn failed, keep any partial answer apart."""
    partial = Message(
        chat_id=user.chat_id, seq=0, role=Role.ASSISTANT, content=exc.partial,
        status=TurnStatus.FAILED, error=str(exc),
    ) if exc.partial else None
    try:
        await runtime.leases.release_with(lease, lambda owner: runtime.store.fail_turn(
            user, str(exc), partial, lease_owner=owner))
        history.add([replace(user, status=TurnStatus.FAILED)])
    except Exception:
        # Storage is in trouble too: forget the cached entry; recovery fails the pending
        # message once the store is healthy again.
        runtime.cache.discard(user.chat_id)
