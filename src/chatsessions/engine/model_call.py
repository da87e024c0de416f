"""The one path every model call takes: a turn's answer and its summary, a regenerated
answer, a title, an answer that is not stored, a stateless completion.

Here, and only here, a call meets the backend: the backend by name, its circuit breaker
(refuse while open, one trial after the cooldown, a verdict per call), one total deadline
(``Settings.turn_deadline``), and the ``conversation`` hint backends with per-chat state
use. A call yields text deltas (when streaming), then exactly one final
:class:`~chatsessions.types.Completion`, so an answer of another kind (tool calls, say)
widens ``Completion`` rather than adding a path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from chatsessions.backends import Backend, make_backend
from chatsessions.backends.base import ChatMessages, conversation
from chatsessions.config import Settings
from chatsessions.engine.circuit import CircuitBreaker
from chatsessions.errors import BackendError, BackendTimeout
from chatsessions.types import (
    Completion,
    GenerationParams,
    ResponseFormat,
    StreamItem,
    ToolOptions,
)


class ModelCalls:
    """The backends by name, a circuit breaker each, and the call that goes through both."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self._settings = settings
        self._backends: dict[str, Backend] = {backend.name: backend} if backend else {}
        self._circuits: dict[str, CircuitBreaker] = {}
        self.default_backend = backend.name if backend else settings.backend
        #: seconds one call may take in all, streamed or not
        self.deadline = settings.turn_deadline

    def backend(self, name: str | None = None) -> Backend:
        """The backend ``name`` (default: the configured one), made on first use."""
        name = name or self.default_backend
        if name not in self._backends:
            self._backends[name] = make_backend(name, self._settings)
        return self._backends[name]

    def circuit(self, name: str) -> CircuitBreaker:
        if name not in self._circuits:
            self._circuits[name] = CircuitBreaker(self._settings.circuit_failures,
                                                  self._settings.circuit_cooldown)
        return self._circuits[name]

    async def aclose(self) -> None:
        """Close the backends made so far; the next call makes them again."""
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            await backend.aclose()

    async def call(
        self,
        backend: Backend,
        messages: ChatMessages,
        params: GenerationParams,
        model: str,
        *,
        streaming: bool,
        chat_id: str | None = None,
        tools: ToolOptions | None = None,
        response_format: ResponseFormat | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        """Ask ``backend``: yield text deltas and tool-call pieces (when ``streaming``),
        then the Completion. ``tools``: the functions the model may call (None or no
        tools: the backend is asked exactly as before tools existed). ``response_format``:
        the shape the answer must take, likewise passed only when it asks for JSON.

        ``chat_id`` names the conversation the call continues (None for a one-off call, so
        a backend keeping per-chat state leaves the chat's alone). Raises
        ``BackendUnavailable`` without calling while the circuit is open (not counted as a
        failure: the backend was not asked), ``BackendTimeout`` past the deadline (with the
        text streamed so far as ``partial``), ``BackendError`` when the model fails. Each
        wait gets what is left of the deadline, so no timeout scope spans a ``yield``.
        """
        circuit = self.circuit(backend.name)
        circuit.before_call()
        end = asyncio.get_running_loop().time() + self.deadline
        parts: list[str] = []
        token = conversation.set(chat_id)
        # only asked of backends when there is something to offer: a backend written
        # before tools existed keeps working
        offered: dict[str, Any] = {"tools": tools} if tools is not None and tools.tools else {}
        if response_format is not None and response_format.structured:
            offered["response_format"] = response_format
        try:
            try:
                completion: Completion | None = None
                if not streaming:
                    async with asyncio.timeout_at(end):  # no task per call, unlike wait_for
                        completion = await backend.complete(messages, params, model, **offered)
                else:
                    deltas = backend.stream(messages, params, model, **offered)
                    async with aclosing(deltas):
                        while True:
                            try:
                                async with asyncio.timeout_at(end):
                                    item = await anext(deltas)
                            except StopAsyncIteration:
                                break
                            if isinstance(item, Completion):
                                completion = item
                                continue
                            if isinstance(item, str):
                                parts.append(item)
                            yield item
                if completion is None:
                    raise BackendError("the model ended without an answer")
            except TimeoutError:
                timeout = BackendTimeout(f"no answer within the {self.deadline:g}s deadline",
                                         partial="".join(parts))
                circuit.failure(timeout)
                raise timeout from None
            except BackendError as exc:
                circuit.failure(exc)
                raise
            except BaseException:  # cancelled, or the reader went away: no verdict
                circuit.abandon()
                raise
            circuit.success()
            yield completion
        finally:
            with contextlib.suppress(ValueError):  # closed from another context
                conversation.reset(token)

    async def complete(
        self,
        backend: Backend,
        messages: ChatMessages,
        params: GenerationParams,
        model: str,
        *,
        chat_id: str | None = None,
        tools: ToolOptions | None = None,
        response_format: ResponseFormat | None = None,
    ) -> Completion:
        """:meth:`call` without streaming: the Completion."""
        return await final(self.call(backend, messages, params, model, streaming=False,
                                     chat_id=chat_id, tools=tools,
                                     response_format=response_format))


async def final(calls: AsyncGenerator[StreamItem, None]) -> Completion:
    """Read a call to its end, dropping deltas: its Completion."""
    async with aclosing(calls):
        async for item in calls:
            if isinstance(item, Completion):
                return item
    raise BackendError("the model ended without an answer")  # pragma: no cover - see call
