"""Turns: a message sent and its answer stored (streamed or not, with the tool loop when
functions are offered), retried, regenerated, or edited into a fork."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from chatsessions._sessions.core import _parsing, _policy, _stored
from chatsessions._sessions.tools import ToolMethods
from chatsessions.engine.content import PartSpec, check_content
from chatsessions.engine.regenerate import run_regenerate
from chatsessions.engine.structured import FormatSpec, check_response_format
from chatsessions.engine.tool_round import RoundOptions
from chatsessions.engine.tools import ToolSpec
from chatsessions.engine.turn import TurnOptions, run_turn
from chatsessions.errors import BackendError, ChatSessionsError, InvalidInput
from chatsessions.types import (
    ContextPolicy,
    GenerationParams,
    Message,
    Role,
    ToolCallDelta,
    TurnStatus,
)
from chatsessions.validation import check_params, check_text


class TurnMethods(ToolMethods):
    async def send(
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
        max_tool_rounds: int | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> Message:
        """Run one turn and return the stored assistant message (with usage).

        ``system_prompt`` answers this turn under another prompt (the chat keeps its own);
        ``if_message_count`` runs the turn only if the chat still holds that many messages
        when its turn comes, else raises :class:`ChatMoved` having stored nothing.

        ``tools`` (replacing the chat's for this call), ``tool_choice`` and
        ``parallel_tool_calls`` are offered to the model. When it calls Python functions
        given as tools (here or on the chat), they are run and their outputs sent back,
        up to ``max_tool_rounds`` times (default ``Settings.max_tool_rounds``; after the
        last the model must answer in text), every call and output stored. When it calls
        a tool that is only a definition, the answer returned holds ``tool_calls`` and the
        chat waits for :meth:`send_tool_results` (or :meth:`cancel_tool_calls`); a new
        message meanwhile raises :class:`ToolCallsPending`.

        ``text`` may be a list of parts (text, and images by URL or base64 data URL, in
        OpenAI's chat or Responses shapes), stored as the message's ``parts``.
        ``response_format`` (a pydantic model class, a :class:`ResponseFormat`, or
        OpenAI's dict) asks for JSON of that shape; the answer is stored as text and
        returned with ``parsed`` set (the model's instance, or the JSON value), or
        :class:`InvalidAnswer` is raised when it does not fit (the answer stays stored).
        ``context_policy`` overrides the chat's for this turn (``none`` refuses a chat
        too long for the window with :class:`ContextTooLong`, storing nothing).
        """
        spec = check_response_format(response_format)
        return await _stored(self._converse(chat_id, text, TurnOptions(
            check_params(params), idempotency_key, system_prompt, if_message_count,
            response_format=spec, context_policy=_policy(context_policy)),
            tools, tool_choice, parallel_tool_calls, max_tool_rounds, streaming=False,
            model=response_format))

    async def send_message(
        self,
        chat_id: str,
        text: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
        if_message_count: int | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        max_tool_rounds: int | None = None,
    ) -> str:
        """The tutorial's call: send ``text`` with the whole history, return the answer
        (options as for :meth:`send`; Python functions among ``tools`` are run)."""
        return (await self.send(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            max_tool_rounds=max_tool_rounds)).content

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
        max_tool_rounds: int | None = None,
        response_format: FormatSpec | None = None,
        context_policy: ContextPolicy | str | None = None,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """Yield text deltas and tool-call pieces as they arrive, each stored answer that
        calls tools and each stored tool output (as Messages), then the stored final
        assistant message, last (options as for :meth:`send`)."""
        turn = self._streamed(chat_id, text, params, idempotency_key, system_prompt,
                              if_message_count, tools, tool_choice, parallel_tool_calls,
                              max_tool_rounds, response_format, context_policy)
        async with aclosing(turn):
            async for item in turn:
                yield item

    def _streamed(
        self, chat_id: str, text: str | Sequence[PartSpec],
        params: GenerationParams | dict[str, Any] | None, idempotency_key: str | None,
        system_prompt: str | None, if_message_count: int | None,
        tools: Sequence[ToolSpec] | None, tool_choice: str | None,
        parallel_tool_calls: bool | None, max_tool_rounds: int | None,
        response_format: FormatSpec | None, context_policy: ContextPolicy | str | None,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """:meth:`stream`'s turn, its options checked now (a background run checks them
        before it is stored: ``runs.py``)."""
        spec = check_response_format(response_format)
        return self._converse(chat_id, text, TurnOptions(
            check_params(params), idempotency_key, system_prompt, if_message_count,
            response_format=spec, context_policy=_policy(context_policy)),
            tools, tool_choice, parallel_tool_calls, max_tool_rounds, streaming=True,
            model=response_format)

    async def stream_message(
        self,
        chat_id: str,
        text: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
        if_message_count: int | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
        parallel_tool_calls: bool | None = None,
        max_tool_rounds: int | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield only the answer's text deltas (options as for :meth:`send`)."""
        stream = self.stream(
            chat_id, text, params=params, idempotency_key=idempotency_key,
            system_prompt=system_prompt, if_message_count=if_message_count, tools=tools,
            tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            max_tool_rounds=max_tool_rounds)
        async with aclosing(stream):
            async for item in stream:
                if isinstance(item, str):
                    yield item

    def _converse(
        self, chat_id: str, text: str | Sequence[PartSpec], options: TurnOptions,
        tools: Sequence[ToolSpec] | None, tool_choice: str | None, parallel: bool | None,
        max_rounds: int | None, *, streaming: bool, model: FormatSpec | None = None,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        if options.system_prompt is not None:
            options = replace(options,
                              system_prompt=self._check_system_prompt(options.system_prompt))
        loop = self._loop(chat_id, tools, tool_choice, parallel, max_rounds, RoundOptions(
            options.params, None, None, options.system_prompt, options.response_format,
            options.context_policy))
        turn = self._turn(chat_id, text, replace(options, tools=loop.tools),
                          streaming=streaming)
        if loop.functions:
            turn = self._run_loop(chat_id, loop, turn, streaming,
                                  replayable=options.idempotency_key is not None)
        if options.response_format is None:
            return turn
        return _parsing(turn, options.response_format, model)

    async def retry(
        self,
        chat_id: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
    ) -> Message:
        """Ask again the last user message if its turn failed (options as for :meth:`send`).
        If another turn gets in first, :class:`ChatMoved` is raised and nothing is stored.
        After a failed tool round (outputs stored, no answer), asks again from them."""
        if await self._after_outputs(chat_id):
            return await _stored(self._round(
                chat_id, None, RoundOptions(check_params(params), idempotency_key), False))
        text, count = await self._failed_turn(chat_id)
        return await self.send(chat_id, text, params=params, idempotency_key=idempotency_key,
                               system_prompt=system_prompt, if_message_count=count)

    async def stream_retry(
        self,
        chat_id: str,
        *,
        params: GenerationParams | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """:meth:`retry`, yielding text deltas, then the stored answer."""
        if await self._after_outputs(chat_id):
            run = self._round(chat_id, None, RoundOptions(check_params(params),
                                                          idempotency_key), True)
            async with aclosing(run):
                async for item in run:
                    yield item
            return
        text, count = await self._failed_turn(chat_id)
        stream = self.stream(chat_id, text, params=params, idempotency_key=idempotency_key,
                             system_prompt=system_prompt, if_message_count=count)
        async with aclosing(stream):
            async for item in stream:
                yield item

    async def _after_outputs(self, chat_id: str) -> bool:
        """Whether the chat's last message is a tool output still without an answer."""
        chat = await self.get_chat(chat_id)
        history = await self._runtime.settled_history(chat)
        last = next((m for m in reversed(history.messages) if m.role is not Role.SYSTEM),
                    None)
        return last is not None and last.role is Role.TOOL

    async def _failed_turn(self, chat_id: str) -> tuple[str, int]:
        """The failed last user message's text, and the chat's message count."""
        chat = await self.get_chat(chat_id)
        # A failed turn leaves at most a summary and a partial answer after its message.
        recent = await self._runtime.store.messages(chat_id, after_seq=chat.message_count - 3)
        asked = [m for m in recent if m.role is Role.USER]
        if not asked or asked[-1].status is not TurnStatus.FAILED:
            raise InvalidInput("nothing to retry: the chat's last turn did not fail")
        return asked[-1].content, chat.message_count

    async def regenerate(
        self, chat_id: str, *, params: GenerationParams | dict[str, Any] | None = None
    ) -> Message:
        """Answer the last user message again and return the new stored answer.

        The earlier answer is kept with status ``replaced`` (see :meth:`history`); the model
        sees the history without it. If the model fails, nothing changes and the
        :class:`BackendError` is raised; with nothing to regenerate, :class:`InvalidInput`.
        An answer to tool outputs is asked again from the same outputs (the calls and
        outputs stay); an answer that called tools (still waiting) is replaced by a new
        answer to its question, which may call tools again.
        """
        return await _stored(await self._regeneration(chat_id, params, streaming=False))

    async def stream_regenerate(
        self, chat_id: str, *, params: GenerationParams | dict[str, Any] | None = None
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        """:meth:`regenerate`, yielding text deltas, then the stored new answer."""
        run = await self._regeneration(chat_id, params, streaming=True)
        async with aclosing(run):
            async for item in run:
                yield item

    async def _regeneration(
        self, chat_id: str, params: GenerationParams | dict[str, Any] | None, *,
        streaming: bool,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        checked = check_params(params)
        await self._ready()
        return run_regenerate(self._runtime, self.tenant_id, chat_id, checked,
                              streaming=streaming)

    async def edit_message(
        self, chat_id: str, seq: int, text: str, *,
        params: GenerationParams | dict[str, Any] | None = None,
    ) -> tuple[str, Message]:
        """Ask ``text`` in place of the user message ``seq``, in a fork of the chat made just
        before it; return the fork's id and its answer. The chat itself is not changed.

        If the model fails, the fork is kept with the edited message marked failed (ready
        for :meth:`retry`) and the :class:`BackendError` raised names it in ``chat_id``.
        """
        text = check_text(text, field="message", max_chars=self.settings.max_message_chars)
        check_params(params)
        await self.get_chat(chat_id)
        found = await self._runtime.store.messages(chat_id, after_seq=seq - 1, limit=1)
        if not found or found[0].seq != seq or found[0].role is not Role.USER:
            raise InvalidInput(f"message {seq} is not a user message of this chat")
        fork_id = await self.fork_chat(chat_id, up_to_seq=seq - 1)
        try:
            return fork_id, await self.send(fork_id, text, params=params)
        except BackendError as exc:
            exc.chat_id = fork_id
            raise
        except ChatSessionsError:  # refused before the message was stored: leave no fork
            await self._runtime.store.delete_chat(fork_id, self.tenant_id)
            raise

    async def _turn(
        self,
        chat_id: str,
        content: str | Sequence[PartSpec],
        options: TurnOptions,
        *,
        streaming: bool,
    ) -> AsyncGenerator[str | ToolCallDelta | Message, None]:
        text, parts = check_content(content, field="message",
                                    max_chars=self.settings.max_message_chars)
        if parts is not None:
            options = replace(options, parts=parts)
        if options.idempotency_key is not None:
            check_text(options.idempotency_key, field="idempotency key", max_chars=200)
        if options.system_prompt is not None:
            options = replace(options,
                              system_prompt=self._check_system_prompt(options.system_prompt))
        await self._ready()
        turn = run_turn(self._runtime, self.tenant_id, chat_id, text, options,
                        streaming=streaming)
        async with aclosing(turn):
            async for item in turn:
                if isinstance(item, Message):  # before the yield: a consumer may stop there
                    self._runtime.titles.after_answer(self.tenant_id, item)
                yield item
