"""An answer that is not stored (``store=False``): what the chat's next turn would show
the model, by the chat's context policy, through the same model-call path (circuit
breaker, deadline), and nothing written.

Nothing is written, so no lease is taken and turns on the chat are not held up; the
history is read as it stands, leaving out a turn still in flight. When the policy needs a
new summary, it is written for this answer and not kept (a turn would store it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace

from chatsessions.engine import summary
from chatsessions.engine.cache import History
from chatsessions.engine.context import plan_context
from chatsessions.engine.runtime import Runtime
from chatsessions.engine.turn import answer_message
from chatsessions.errors import ChatNotFound
from chatsessions.types import (
    Chat,
    Completion,
    ContentPart,
    ContextPolicy,
    GenerationParams,
    Message,
    ResponseFormat,
    Role,
)


@dataclass(frozen=True, slots=True)
class AnswerOptions:
    """What one unstored answer may change (already validated by the caller)."""

    params: GenerationParams | None = None
    #: answer under this prompt instead of the chat's own
    system_prompt: str | None = None
    #: ask this model instead of the chat's (or, with no chat, the backend's default)
    model: str | None = None
    #: user/assistant messages shown after the history, before the new one
    prior: Sequence[tuple[Role, str]] = ()
    #: answer from the history up to this seq only
    up_to_seq: int | None = None
    #: the new message's content as parts, when it holds images
    parts: tuple[ContentPart, ...] | None = None
    #: the shape the answer must take (None: text)
    response_format: ResponseFormat | None = None
    #: this call's context policy instead of the chat's
    context_policy: ContextPolicy | None = None


async def run_answer(
    runtime: Runtime,
    tenant_id: str,
    chat_id: str | None,
    text: str,
    options: AnswerOptions,
    *,
    streaming: bool,
) -> AsyncGenerator[str | Message, None]:
    """Yield text deltas (when streaming), then the answer as a Message that is not
    stored (seq 0). ``chat_id=None``: no history, the default backend."""
    models = runtime.models
    if chat_id is None:
        backend = models.backend()
        chat = Chat(id="", system_prompt=runtime.settings.system_prompt, tenant_id=tenant_id,
                    backend=backend.name, model=options.model or backend.default_model)
        history = History()
    else:
        found = await runtime.store.get_chat(chat_id, tenant_id)
        if found is None:
            raise ChatNotFound(chat_id)
        chat = found if options.model is None else replace(found, model=options.model)
        backend = models.backend(chat.backend)
        history = await runtime.settled_history(chat)
    if options.system_prompt is not None:
        chat = replace(chat, system_prompt=options.system_prompt)
    if options.context_policy is not None:
        chat = replace(chat, context_policy=options.context_policy)
    history = _as_asked(history, chat.id, options.up_to_seq, options.prior)
    gen_params = GenerationParams.model_validate(chat.params).merged(options.params)
    context = plan_context(chat, history, text, backend, gen_params,
                           max_output_tokens=runtime.settings.max_output_tokens,
                           parts=options.parts)
    started = time.perf_counter()
    if context.refresh is not None:
        written = await summary.write(models, backend, chat.id, chat.model, context.refresh)
        context = context.summarized(written, backend, chat.model)
    shown = context.messages
    completion: Completion | None = None
    # a one-off call (no chat_id): a backend's saved state of the chat stays the chat's
    async with aclosing(models.call(backend, shown, gen_params, chat.model,
                                    streaming=streaming,
                                    response_format=options.response_format)) as calls:
        async for item in calls:
            if isinstance(item, str):
                yield item
            elif isinstance(item, Completion):
                completion = item
    assert completion is not None  # a call ends with its Completion or raises
    yield answer_message(chat.id, completion, started, context_messages=len(shown),
                         context_tokens=context.tokens)


def _as_asked(history: History, chat_id: str, up_to_seq: int | None,
              prior: Sequence[tuple[Role, str]]) -> History:
    """The history cut at ``up_to_seq`` with ``prior`` after it: a copy (token counts
    kept), so the cached entry stays as stored. The history itself when neither is given."""
    if up_to_seq is None and not prior:
        return history
    count = len(history.messages)
    if up_to_seq is not None:
        while count and history.messages[count - 1].seq > up_to_seq:
            count -= 1
    kept = history.messages[:count]
    asked = History(last_seq=history.last_seq, messages=kept, tokens=history.tokens[:count],
                    shown=history.shown[:count],
                    summaries=sum(m.role is Role.SYSTEM for m in kept),
                    tool_rows=history.tool_rows)
    asked.add([Message(chat_id, history.last_seq + n, role, content)
               for n, (role, content) in enumerate(prior, 1)])
    return asked
