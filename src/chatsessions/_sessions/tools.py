"""Tool calls: the outputs of pending calls sent back (a tool round), cancelled calls, and
the loop that runs Python functions given as tools."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from chatsessions._sessions.answers import AnswerMethods
from chatsessions._sessions.core import _parsing, _policy, _stored
from chatsessions.engine.structured import FormatSpec, check_response_format
from chatsessions.engine.tool_round import RoundOptions, cancel_calls, run_tool_round
from chatsessions.engine.tools import FunctionTool, ToolSpec, functions_of, tool_options
from chatsessions.engine.turn import pending_calls
from chatsessions.errors import InvalidInput
from chatsessions.types import (
    ContextPolicy,
    GenerationParams,
    Message,
    Role,
    ToolCall,
    ToolCallDelta,
    ToolOptions,
)
from chatsessions.validation import check_label, check_params, check_text


class ToolMethods(AnswerMethods):
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
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Message:
        """Store the outputs of the calls the chat is waiting for (``{call_id: output}``,
        every pending call at once) and ask the model again; return its stored answer,
        which may call tools again (Python functions among the tools are run, as in
        :meth:`send`). Unknown ids and missing outputs raise :class:`InvalidInput` naming
        them; a repeated ``idempotency_key`` returns the stored answer. ``system_prompt``
        answers this round under another prompt (the chat keeps its own), and
        ``response_format`` and ``context_policy`` shape it, as in :meth:`send`."""
        return await _stored(self._tool_results(
            chat_id, results, params, tools, tool_choice, parallel_tool_calls,
            idempotency_key, max_tool_rounds, system_prompt, response_format,
            context_policy, streaming=False))

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
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """:meth:`send_tool_results`, yielding as :meth:`stream` does (deltas and call
        pieces, then the stored outputs, then the stored answer, last: the outputs are
        written with the answer)."""
        run = self._tool_results(chat_id, results, params, tools, tool_choice,
                                 parallel_tool_calls, idempotency_key, max_tool_rounds,
                                 system_prompt, response_format, context_policy,
                                 streaming=True)
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
        system_prompt: str | None, response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None, *, streaming: bool,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        if not isinstance(results, Mapping) or not results:
            raise InvalidInput("results must map each pending tool call's id to its output")
        limit = self.settings.max_message_chars
        checked = {check_label(call_id, field="tool_call_id", max_chars=200):
                   check_text(output, field="tool output", max_chars=limit, allow_empty=True)
                   for call_id, output in results.items()}
        if idempotency_key is not None:
            check_text(idempotency_key, field="idempotency key", max_chars=200)
        spec = check_response_format(response_format)
        loop = self._loop(chat_id, tools, tool_choice, parallel_tool_calls, max_tool_rounds,
                          RoundOptions(check_params(params), None, None,
                                       None if system_prompt is None
                                       else self._check_system_prompt(system_prompt),
                                       spec, _policy(context_policy)))
        first = self._round(chat_id, checked, replace(loop.then, idempotency_key=
                                                      idempotency_key), streaming)
        run = self._run_loop(chat_id, loop, first, streaming)
        return run if spec is None else _parsing(run, spec, response_format)

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
              parallel: bool | None, max_rounds: int | None, then: RoundOptions) -> _Loop:
        """The call's loop; ``then``: the options its rounds answer under (the call's
        params, prompt, format and context policy, checked; its tools are added here)."""
        if max_rounds is not None and (not isinstance(max_rounds, int) or max_rounds < 0):
            raise InvalidInput("max_tool_rounds must be 0 or more")
        functions = {**self._runtime.functions.get(chat_id, {}), **functions_of(tools)}
        offered = tool_options(tools, tool_choice, parallel)
        return _Loop(offered, functions,
                     self.settings.max_tool_rounds if max_rounds is None else max_rounds,
                     replace(then, tools=offered))

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
                              replace(loop.then, tools=tools), streaming)


@dataclass(frozen=True, slots=True)
class _Loop:
    """One send's tools: what is offered, the functions it may run, how many times."""

    tools: ToolOptions | None
    functions: dict[str, FunctionTool]
    max_rounds: int
    #: what each round answers under: the call's params, prompt, format, context policy
    then: RoundOptions
