"""POST /v1/chat/completions: a stateless completion by the configured backend
(:meth:`AsyncChatSessions.complete`: the circuit breaker and the deadline apply).

Nothing is stored: the caller sends the whole history, as with OpenAI, tool calls and
tool outputs included; ``tools`` are offered to the model and the calls it makes come back
as ``tool_calls`` with ``finish_reason: "tool_calls"`` (the caller runs them). Streaming
answers ``chat.completion.chunk`` events and ``data: [DONE]``; a failure before the first
token is an HTTP error, one after it an ``error`` event (the official client raises
``APIError``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from chatsessions.errors import BackendError, ChatSessionsError
from chatsessions.service import sse
from chatsessions.service.deps import SessionsDep
from chatsessions.service.openai_compat.errors import (
    ERRORS,
    OpenAIRoute,
    bad_request,
    from_domain,
    unsupported,
)
from chatsessions.service.openai_compat.formats import format_keywords
from chatsessions.service.openai_compat.images import has_images
from chatsessions.service.openai_compat.items import content_text
from chatsessions.service.openai_compat.schemas import ChatCompletionCreate
from chatsessions.service.openai_compat.streaming import json_or_events
from chatsessions.types import Completion, GenerationParams, StreamItem, ToolCallDelta, Usage
from chatsessions.validation import check_params

router = APIRouter(route_class=OpenAIRoute, responses=ERRORS, tags=["openai"])

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool"}


@router.post("/chat/completions", responses=json_or_events(
    "the completion, or with `stream`: `chat.completion.chunk` events, then `[DONE]`"))
async def create_chat_completion(body: ChatCompletionCreate, sessions: SessionsDep) -> Response:
    """One completion of the messages sent, by the configured backend; nothing is kept."""
    body.refuse_unsupported()
    messages = [backend_message(item, index) for index, item in enumerate(body.messages)]
    params = generation_params(body)
    offered = {**body.tool_options(),
               **format_keywords(body.response_format, "response_format")}
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": body.model, "system_fingerprint": None}
    if body.stream:
        deltas = sessions.stream_complete(messages, model=body.model, params=params, **offered)
        try:
            first = await anext(deltas)  # a failure before any output gets its own status
        except BaseException:
            await aclose(deltas)
            raise
        usage = bool((body.stream_options or {}).get("include_usage"))
        return sse.EventStream(_chunks(head, first, deltas, usage))
    completion = await sessions.complete(messages, model=body.model, params=params, **offered)
    message: dict[str, Any] = {"role": "assistant", "content": completion.text, "refusal": None}
    if completion.tool_calls:
        message["content"] = completion.text or None
        message["tool_calls"] = [call.as_openai() for call in completion.tool_calls]
    return JSONResponse({
        **head, "object": "chat.completion", "model": completion.model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(completion)}],
        "usage": usage_object(completion.usage),
    })


def backend_message(item: Any, index: int) -> dict[str, Any]:
    """One request message in the library's chat shape (the library checks the calls, the
    outputs' ids and that every call has its output)."""
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise bad_request("Each message must be an object with a 'role'.", where)
    role = item.get("role")
    if role == "function":
        raise unsupported(f"{where}.role", "Legacy function messages are not supported "
                          "(send tool messages)")
    if role not in ROLES:
        raise bad_request(f"Unsupported role {role!r}: expected one of {', '.join(ROLES)}.",
                          f"{where}.role")
    for field in ("function_call", "audio"):
        if item.get(field):
            raise unsupported(f"{where}.{field}")
    calls = item.get("tool_calls") if role == "assistant" else None
    content = item.get("content")
    message: dict[str, Any] = {"role": ROLES[role], "content": (
        content if role == "user" and has_images(content)  # the library checks them
        else None if calls and content is None
        else content_text(content, f"{where}.content"))}
    if calls:
        if not isinstance(calls, list):
            raise bad_request("'tool_calls' must be a list.", f"{where}.tool_calls")
        for n, call in enumerate(calls):
            if not isinstance(call, dict) or call.get("type", "function") != "function":
                raise unsupported(f"{where}.tool_calls[{n}].type",
                                  "Only function tool calls are supported")
        message["tool_calls"] = calls
    if role == "tool":
        message["tool_call_id"] = item.get("tool_call_id")
    return message


def finish_reason(completion: Completion) -> str:
    if completion.tool_calls:
        return "tool_calls"
    return completion.finish_reason or "stop"


def generation_params(body: ChatCompletionCreate) -> GenerationParams:
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    return check_params({
        key: value for key, value in {
            "temperature": body.temperature, "top_p": body.top_p,
            "max_tokens": body.max_completion_tokens or body.max_tokens, "stop": stop,
            "seed": body.seed, "presence_penalty": body.presence_penalty,
            "frequency_penalty": body.frequency_penalty,
        }.items() if value is not None
    })


def usage_object(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async generator we stop reading early (its ``finally`` blocks run now)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def _data(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


async def _chunks(head: dict[str, Any], first: StreamItem, rest: AsyncIterator[StreamItem],
                  with_usage: bool) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _data({**head, "object": "chat.completion.chunk", "choices": [choice]})

    async with aclosing(rest):  # type: ignore[type-var]
        yield chunk({"role": "assistant", "content": ""})
        item = first
        try:
            while not isinstance(item, Completion):
                if isinstance(item, ToolCallDelta):
                    yield chunk({"tool_calls": [call_delta(item)]})
                elif item:
                    yield chunk({"content": item})
                item = await anext(rest)
        except ChatSessionsError as exc:
            yield _data(from_domain(exc).body())
            return
        except StopAsyncIteration:
            yield _data(from_domain(BackendError("the model ended without an answer")).body())
            return
        yield chunk({}, finish_reason(item))
        if with_usage:
            yield _data({**head, "object": "chat.completion.chunk", "choices": [],
                         "usage": usage_object(item.usage)})
        yield b"data: [DONE]\n\n"


def call_delta(piece: ToolCallDelta) -> dict[str, Any]:
    """A tool call's piece as OpenAI streams it: the first names the call (``id``,
    ``type``, ``name``), the others add to its ``arguments``."""
    function: dict[str, str] = {"arguments": piece.arguments}
    delta: dict[str, Any] = {"index": piece.index}
    if piece.id is not None:
        delta |= {"id": piece.id, "type": "function"}
    if piece.name is not None:
        function = {"name": piece.name, **function}
    return {**delta, "function": function}
