"""A turn (DESIGN §4): serialize per chat, store the user message, build the context, call
the model, store the answer, or record the failure. Nothing about turns lives elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace

from chatsessions.backends import Backend, Completion
from chatsessions.backends.base import ChatMessages, conversation
from chatsessions.cache import History
from chatsessions.context import trim_start
from chatsessions.core import Core
from chatsessions.errors import (
    BackendError,
    BackendTimeout,
    ChatMoved,
    ContextTooLong,
    InvalidInput,
)
from chatsessions.leases import Lease
from chatsessions.types import Chat, GenerationParams, Message, Role, TurnStatus

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
    async with core.leases.hold(chat_id, tenant_id, settings.busy_timeout) as lease:
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
        context = build_context(core, chat, history, text, backend, gen_params)

        user = await core.store.add_user_message(chat.id, text, idempotency_key=idempotency_key)
        circuit = core.circuit(backend.name)
        started = time.perf_counter()
        try:
            circuit.before_call()
            completion: Completion | None = None
            calls = _call_model(backend, context, gen_params, chat.model, streaming,
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
            answer = Message(
                chat_id=chat.id, seq=0, role=Role.ASSISTANT,
                content=completion.text.strip(), model=completion.model,
                prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
                latency_ms=int((time.perf_counter() - started) * 1000),
            )
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
        core.cache.grew(chat.id, history.add([replace(user, status=TurnStatus.OK), stored]))
    yield stored


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
                yield await asyncio.wait_for(backend.complete(context, params, model), deadline)
                return
            deltas = backend.stream(context, params, model)
            async with aclosing(deltas):
                while True:
                    try:
                        item = await asyncio.wait_for(anext(deltas), end - loop.time())
                    except StopAsyncIteration:
                        return
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
        following = await core.store.messages(earlier.chat_id, after_seq=earlier.seq, limit=1)
        if following and following[0].role is Role.ASSISTANT:
            return following[0]
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


def build_context(
    core: Core,
    chat: Chat,
    history: History,
    text: str,
    backend: Backend,
    params: GenerationParams,
) -> ChatMessages:
    """System prompt + the newest whole turns that fit + the new message."""
    for index, token_count in enumerate(history.tokens):
        if token_count is None:
            message = history.messages[index]
            history.tokens[index] = backend.count_tokens(
                message.role.value, message.content, chat.model)
    reserve = params.max_tokens or core.settings.max_output_tokens
    system_tokens = backend.count_tokens("system", chat.system_prompt, chat.model)
    budget = (backend.context_window(chat.model) - reserve - system_tokens
              - ANSWER_PRIMER_TOKENS)
    if budget <= 0:
        raise ContextTooLong(
            "the system prompt and the reserved answer already fill the context window")
    visible = [*history.messages, Message(chat.id, 0, Role.USER, text)]
    counts = [*history.tokens, backend.count_tokens("user", text, chat.model)]
    start = trim_start(visible, counts, budget)  # type: ignore[arg-type]
    return [
        {"role": "system", "content": chat.system_prompt},
        *(m.as_openai() for m in visible[start:]),
    ]
