"""A tool round: the outputs of the calls the last answer made, then the model's next
answer (which may call tools again). The turn that asked the question stays open across
rounds in the sense that matters to the model: it sees the question, every call and every
output together (``context.py`` keeps them as one unit).

Storage work equals a turn's: the lease is taken by the round's first write (on a chat
this process left as it presumes, with no read first), then ONE write stores the outputs
and the answer with the usage counters and releases the lease (``Store.complete_round``).
The outputs are not written before the model call: a crash meanwhile leaves the chat
waiting for them, as before the request, and the caller submits them again (under its
``Idempotency-Key`` too). If the model fails, the outputs are stored alone (a function
that ran must not run again) and :meth:`retry` asks the model again from them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import datetime

from chatsessions.engine.cache import History
from chatsessions.engine.context import plan_context
from chatsessions.engine.runtime import Runtime
from chatsessions.engine.turn import answer_message, offered, pending_calls
from chatsessions.errors import BackendError, InvalidInput
from chatsessions.types import (
    Chat,
    Completion,
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

#: The output stored for a call the caller cancelled.
CANCELLED = "error: cancelled by the caller"


@dataclass(frozen=True, slots=True)
class RoundOptions:
    """What one tool round may change (already validated by the caller)."""

    params: GenerationParams | None = None
    idempotency_key: str | None = None
    tools: ToolOptions | None = None
    #: this round's prompt instead of the chat's (the chat keeps its own)
    system_prompt: str | None = None
    #: the shape the answer must take (None: the model's default, text)
    response_format: ResponseFormat | None = None
    #: this round's context policy instead of the chat's (which stays as stored)
    context_policy: ContextPolicy | None = None


async def run_tool_round(
    runtime: Runtime,
    tenant_id: str,
    chat_id: str,
    results: Mapping[str, str] | None,
    options: RoundOptions,
    *,
    streaming: bool,
) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
    """Yield text deltas and call pieces (when streaming), then the stored outputs and
    the stored answer, last. ``results`` maps each pending call's id to its output: all
    of the last answer's pending calls, no other. ``results=None`` asks again from
    outputs already stored whose answer failed (a retry)."""
    settings = runtime.settings
    store = runtime.store
    key = options.idempotency_key
    # Like a turn, a round presumes the chat as this process last left it (keyed rounds
    # look at the database first) and takes the lease with its first write.
    presumed = runtime.presumed_chat(chat_id) if key is None else None
    async with runtime.leases.hold(chat_id, tenant_id, settings.busy_timeout,
                                   presumed=presumed) as lease:
        while True:
            chat = lease.chat
            if key is not None:
                earlier = await store.message_by_idempotency_key(chat.id, key)
                if earlier is not None:
                    for message in await _replay(runtime, earlier, results):
                        yield message
                    return
            history = await runtime.visible_history(chat)
            try:
                outputs = _outputs(chat.id, history, results, key)
                backend = runtime.models.backend(chat.backend)
                gen_params = GenerationParams.model_validate(chat.params).merged(
                    options.params)
                # Trimmed, not summarized: a summary waits for the next turn.
                prompted = chat
                if options.system_prompt is not None:
                    prompted = replace(prompted, system_prompt=options.system_prompt)
                if options.context_policy is not None:
                    prompted = replace(prompted, context_policy=options.context_policy)
                context = plan_context(prompted, history, None, backend, gen_params,
                                       max_output_tokens=settings.max_output_tokens,
                                       summarize=False, outputs=outputs)
            except InvalidInput:
                if lease.taken:
                    raise
                await runtime.leases.take(lease)  # judge by the chat as stored
                continue
            if lease.taken or await runtime.leases.take_with(
                    lease, lambda owner, until: _begin(runtime, lease.chat, owner, until)):
                break
            await runtime.leases.take(lease)  # the chat moved on elsewhere: look again
        started = time.perf_counter()
        shown = context.messages
        completion: Completion | None = None
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
        except BaseException as exc:
            if outputs:  # keep what the tools said; the answer can be asked for again
                await asyncio.shield(_keep_outputs(runtime, lease.owner, chat, history,
                                                   outputs))
                lease.released = True
            if isinstance(exc, (BackendError, asyncio.CancelledError, GeneratorExit)):
                raise
            raise BackendError(f"internal error: {exc!r}") from exc
        assert completion is not None  # a call ends with its Completion or raises
        answer = answer_message(chat.id, completion, started, context_messages=len(shown),
                                context_tokens=context.tokens)
        try:
            stored = await runtime.leases.release_with(
                lease, lambda owner: store.complete_round(chat.id, outputs, answer,
                                                          lease_owner=owner))
        except BaseException:
            runtime.cache.discard(chat.id)  # committed or not: the next turn reads the truth
            raise
        runtime.cache.grew(chat.id, history.add(stored))
        history.chat = replace(lease.chat, message_count=stored[-1].seq,
                               updated_at=stored[-1].created_at)
    for message in stored:
        yield message


async def _begin(runtime: Runtime, chat: Chat, owner: str, until: datetime) -> bool | None:
    """The round's first write (``Store.begin_round``), None if nothing was taken."""
    return True if await runtime.store.begin_round(chat, owner, until) else None


async def cancel_calls(runtime: Runtime, tenant_id: str, chat_id: str,
                       call_ids: list[str] | None) -> list[ToolCall]:
    """Store a cancelled output for the pending calls ``call_ids`` (None: all of them),
    so the history stays well-formed and the chat can go on; return the calls."""
    settings = runtime.settings
    async with runtime.leases.hold(chat_id, tenant_id, settings.busy_timeout) as lease:
        history = await runtime.visible_history(lease.chat)
        waiting = pending_calls(history.messages)
        ids = {call.id for call in waiting}
        unknown = [i for i in call_ids or () if i not in ids]
        if unknown:
            raise InvalidInput("no pending tool call has the id " + ", ".join(unknown))
        chosen = [c for c in waiting if call_ids is None or c.id in call_ids]
        if not chosen:
            return []
        outputs = [Message(chat_id, 0, Role.TOOL, CANCELLED, tool_call_id=c.id)
                   for c in chosen]
        await _keep_outputs(runtime, lease.owner, lease.chat, history, outputs)
        lease.released = True
    return chosen


async def _keep_outputs(runtime: Runtime, owner: str, chat: Chat, history: History,
                        outputs: list[Message]) -> None:
    """Store outputs without an answer, releasing the lease with them."""
    try:
        stored = await runtime.store.append_messages(chat.id, outputs, lease_owner=owner)
    except BaseException:
        runtime.cache.discard(chat.id)
        raise
    runtime.cache.grew(chat.id, history.add(stored))
    history.chat = None


def _outputs(chat_id: str, history: History, results: Mapping[str, str] | None,
             key: str | None) -> list[Message]:
    """The output rows ``results`` give, checked against the calls waiting for them."""
    waiting = pending_calls(history.messages)
    if results is None:
        last = next((m for m in reversed(history.messages) if m.role is not Role.SYSTEM),
                    None)
        if waiting or last is None or last.role is not Role.TOOL:
            raise InvalidInput("nothing to retry: the chat's last message is not a tool "
                               "output waiting for its answer")
        return []
    if not waiting:
        raise InvalidInput("the chat is not waiting for tool outputs: its last answer "
                           "made no call still without an output")
    ids = [call.id for call in waiting]
    unknown = [i for i in results if i not in ids]
    if unknown:
        raise InvalidInput("no pending tool call has the id " + ", ".join(unknown)
                           + "; waiting for " + ", ".join(ids))
    missing = [i for i in ids if i not in results]
    if missing:
        raise InvalidInput("outputs are missing for the tool calls " + ", ".join(missing)
                           + ": submit every pending call's output at once (or cancel "
                           "those calls)")
    rows = [Message(chat_id, 0, Role.TOOL, results[i], tool_call_id=i) for i in ids]
    if key is not None:
        rows[0] = replace(rows[0], idempotency_key=key)
    return rows


async def _replay(runtime: Runtime, earlier: Message,
                  results: Mapping[str, str] | None) -> list[Message]:
    """The stored outcome of a submission already made with this idempotency key."""
    following = await runtime.store.messages(
        earlier.chat_id, after_seq=earlier.seq - 1,
        limit=(len(results) if results else 1) + 1)
    outputs = [m for m in following if m.role is Role.TOOL]
    given = {m.tool_call_id: m.content for m in outputs}
    if earlier.role is not Role.TOOL or (results is not None and given != dict(results)):
        raise InvalidInput("this Idempotency-Key was already used with different outputs")
    answer = next((m for m in following if m.role is Role.ASSISTANT), None)
    if answer is None or answer.status is not TurnStatus.OK:
        raise BackendError("this request already failed: the model gave no answer to "
                           "these outputs (retry asks again)")
    return [*outputs, answer]
