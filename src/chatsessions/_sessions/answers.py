"""Answers that are not stored: a chat's next answer asked with ``store=False``, and
stateless completions of a whole conversation."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from chatsessions._sessions.core import _parsing, _policy, _stored
from chatsessions._sessions.history import HistoryMethods, _added_role
from chatsessions.engine.answer import AnswerOptions, run_answer
from chatsessions.engine.content import PartSpec, check_content
from chatsessions.engine.model_call import final
from chatsessions.engine.structured import FormatSpec, check_response_format
from chatsessions.engine.tools import (
    ToolSpec,
    check_chat_message,
    check_pairing,
    tool_options,
)
from chatsessions.errors import InvalidInput
from chatsessions.types import (
    Completion,
    ContextPolicy,
    GenerationParams,
    Message,
    Role,
    StreamItem,
    ToolCallDelta,
    ToolOptions,
)
from chatsessions.validation import check_label, check_params, check_text


class AnswerMethods(HistoryMethods):
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
