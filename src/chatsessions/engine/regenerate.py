"""Regenerate the last answer: ask the model again and keep the earlier answer.

A turn's sibling (``turn.py`` holds the turn itself): under the chat's turn lease, the
model sees the history up to and including the last user message. Only once a new answer
exists is anything written, in one transaction: the old answer becomes ``replaced`` (kept,
shown on request, never sent to the model again) and the new one is appended with
``replaces_seq``. A failed call changes nothing, so there is no pending state to recover.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from chatsessions.engine.cache import History
from chatsessions.engine.context import build_context
from chatsessions.engine.runtime import Runtime
from chatsessions.engine.turn import answer_message, offered
from chatsessions.errors import InvalidInput
from chatsessions.types import Completion, GenerationParams, Message, Role, ToolCallDelta


async def run_regenerate(
    runtime: Runtime,
    tenant_id: str,
    chat_id: str,
    params: GenerationParams | None,
    *,
    streaming: bool,
) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
    """Yield text deltas (when streaming), then the stored new answer. The answer to
    tool outputs is asked again from the same outputs; an answer that called tools is
    replaced by a new answer to its question, which may call tools again (the calls
    replaced had no outputs yet, or the answer would not be the last message)."""
    settings = runtime.settings
    async with runtime.leases.hold(chat_id, tenant_id, settings.busy_timeout) as lease:
        chat = lease.chat
        history = await runtime.visible_history(chat)
        asked = last_exchange(history)
        question, old = history.messages[asked], history.messages[-1]
        backend = runtime.models.backend(chat.backend)
        gen_params = GenerationParams.model_validate(chat.params).merged(params)
        # The history without the question and its answer (a summary written during that
        # turn stays); token counts are copied back to the cached entry. An answer to
        # tool outputs is asked again from them: the calls and outputs stay.
        after_tools = question.role is Role.TOOL
        kept = [i for i in range(len(history.messages) - 1) if after_tools or i != asked]
        earlier = History(last_seq=old.seq, messages=[history.messages[i] for i in kept],
                          tokens=[history.tokens[i] for i in kept],
                          shown=[history.shown[i] for i in kept],
                          tool_rows=history.tool_rows)
        context = build_context(chat, earlier, None if after_tools else question.content,
                                backend, gen_params,
                                max_output_tokens=settings.max_output_tokens)
        for index, count in zip(kept, earlier.tokens, strict=True):
            history.tokens[index] = count

        started = time.perf_counter()
        completion: Completion | None = None
        async with aclosing(runtime.models.call(
                backend, context, gen_params, chat.model, streaming=streaming,
                chat_id=chat.id, tools=offered(chat, None))) as calls:
            async for item in calls:  # a failure here changes nothing: it just raises
                if isinstance(item, Completion):
                    completion = item
                else:
                    yield item
        assert completion is not None  # a call ends with its Completion or raises
        answer = answer_message(chat.id, completion, started,
                                context_messages=len(context), replaces_seq=old.seq)
        try:
            stored = await runtime.leases.release_with(
                lease, lambda owner: runtime.store.replace_answer(old, answer, lease_owner=owner))
        except BaseException:
            runtime.cache.discard(chat.id)  # committed or not, the next turn reads the truth
            raise
        runtime.cache.grew(chat.id, history.add([stored]))
    yield stored


def last_exchange(history: History) -> int:
    """Where the user message answered last is in the history (the answer is the last
    message), or why there is nothing to regenerate. Summaries (system rows) written
    between a question and its answer are skipped."""
    shown = history.messages
    if not shown:
        raise InvalidInput("nothing to regenerate: the chat has no answer yet")
    if shown[-1].role is not Role.ASSISTANT:
        raise InvalidInput("nothing to regenerate: the chat's last message is not an answer")
    asked = len(shown) - 2
    while asked >= 0 and shown[asked].role is Role.SYSTEM:
        asked -= 1
    if asked < 0 or shown[asked].role not in (Role.USER, Role.TOOL):
        raise InvalidInput(
            "nothing to regenerate: the last answer does not follow a user message")
    return asked
