"""Any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server, LiteLLM).

Retries with backoff on 429/5xx/connection errors, honouring Retry-After, are the
official client's own (``max_retries``); we only translate its errors into ours. Requests
go through the client's generic ``post``: ``chat.completions.create`` re-validates every
message of the history on each call, a cost that grows with the chat (about 0.1 ms a
message) while our messages are already plain, checked dicts. The transport is aiohttp
(the client's ``DefaultAioHttpClient``): a call costs about 0.5 ms less CPU than on the
default httpx transport, which is most of what a turn costs us besides storage. Streamed
chunks are read as plain JSON too: the SDK's chunk models cost about 0.1 ms a chunk to
build, on the way to the first token and on every token after it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

import openai
from openai import AsyncStream
from openai.types.chat import ChatCompletion

from chatsessions.backends.base import (
    ChatMessages,
    Completion,
    StreamItem,
    ToolCallDelta,
    conversation,
)
from chatsessions.backends.routing import Endpoint, Router
from chatsessions.backends.tokens import context_window_for, count_message_tokens
from chatsessions.config import Settings
from chatsessions.errors import BackendError, BackendTimeout
from chatsessions.types import GenerationParams, ResponseFormat, ToolCall, ToolOptions, Usage


class _Server:
    """One endpoint's clients: ``client`` retries as configured; ``first_try`` does not,
    for an endpoint that has others behind it to fail over to at once."""

    def __init__(self, url: str | None, api_key: str, settings: Settings) -> None:
        self.client = openai.AsyncOpenAI(
            base_url=url,
            api_key=api_key,
            timeout=settings.request_timeout,
            max_retries=settings.max_retries,
            http_client=openai.DefaultAioHttpClient(),
        )
        self.first_try = self.client.with_options(max_retries=0)  # shares the connections
        # The full address, so the client need not join it onto its base URL each call.
        self.address = str(self.client.base_url.join("chat/completions"))


class OpenAIBackend:
    name = "openai"

    def __init__(self, settings: Settings) -> None:
        self.default_model = settings.model
        self._window_override = settings.context_window
        self._default_max_tokens = settings.max_output_tokens
        urls = settings.openai_endpoints
        # A self-hosted server usually needs no key, but the client insists on one.
        api_key = settings.openai_api_key or ("none" if urls else None)
        targets: list[str | None] = [*urls] or [None]  # None: the official API
        self._servers = [_Server(url, api_key, settings) for url in targets] if api_key else []
        self.router = Router(
            [server.address for server in self._servers] or ["-"],
            policy=settings.openai_routing, failures_to_rest=settings.circuit_failures,
            cooldown=settings.endpoint_cooldown)
        self._by_address = {server.address: server for server in self._servers}

    def _require_servers(self) -> None:
        if not self._servers:
            raise BackendError(
                "the openai backend needs OPENAI_API_KEY (or OPENAI_BASE_URL for a "
                "self-hosted server)"
            )

    async def _post(self, messages: ChatMessages, body: dict[str, Any],
                    **options: Any) -> tuple[Any, Endpoint]:
        """Send one request to the first endpoint of the router's order that takes it.
        An endpoint that cannot be reached or answers with a server error hands the call
        to the next at once; the last one left retries as configured. The endpoint's
        in-flight count is the caller's to release (a stream holds it until it ends)."""
        order = (self.router.order(route_key(messages)) if len(self._servers) > 1
                 else self.router.endpoints)
        for attempt, endpoint in enumerate(order):
            server = self._by_address[endpoint.url]
            last = attempt == len(order) - 1
            endpoint.in_flight += 1
            try:
                response = await (server.client if last else server.first_try).post(
                    server.address, body=body, **options)
            except openai.APIError as exc:
                endpoint.in_flight -= 1
                unreachable = isinstance(exc, openai.APIConnectionError)
                if unreachable or _server_side(exc):
                    self.router.failed(endpoint, unreachable=unreachable)
                    if not last:
                        continue
                raise translate_error(exc) from exc
            except BaseException:
                endpoint.in_flight -= 1
                raise
            self.router.succeeded(endpoint)
            return response, endpoint
        raise AssertionError("the router gave no endpoint")  # pragma: no cover

    def _request(
        self, messages: ChatMessages, params: GenerationParams, model: str,
        tools: ToolOptions | None, response_format: ResponseFormat | None,
    ) -> dict[str, Any]:
        kwargs = params.as_kwargs()
        kwargs.setdefault("max_tokens", self._default_max_tokens)
        request = {"model": model, "messages": list(messages), **kwargs}
        if tools is not None:
            request.update(tools.as_request())
        # Text is every server's default; some self-hosted ones refuse the field itself.
        if response_format is not None and response_format.structured:
            request["response_format"] = response_format.as_openai()
        return request

    async def complete(
        self, messages: ChatMessages, params: GenerationParams, model: str, *,
        tools: ToolOptions | None = None, response_format: ResponseFormat | None = None,
    ) -> Completion:
        self._require_servers()
        # The plain JSON: building the SDK's response models costs about 0.15 ms a
        # call, for the four fields we read.
        response, endpoint = await self._post(
            messages, self._request(messages, params, model, tools, response_format),
            cast_to=object)
        endpoint.in_flight -= 1
        return completion_of(response, model)

    async def stream(
        self, messages: ChatMessages, params: GenerationParams, model: str, *,
        tools: ToolOptions | None = None, response_format: ResponseFormat | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        self._require_servers()
        parts: list[str] = []
        calls = _CallAssembly()
        usage = Usage()
        finish: str | None = None
        served_model = model
        body = {**self._request(messages, params, model, tools, response_format),
                "stream": True, "stream_options": {"include_usage": True}}
        try:
            stream, endpoint = await self._post(
                messages, body, cast_to=ChatCompletion, stream=True,
                stream_cls=AsyncStream[object])
        except BackendError:
            raise
        except Exception as exc:  # a transport error the client did not wrap
            raise BackendError(f"cannot reach the model backend: {type(exc).__name__}"
                               ) from exc
        try:
            async with stream:
                async for chunk in stream:
                    # a field left out reads as None, as in the SDK's models
                    served_model = chunk.get("model") or served_model
                    if (counted := chunk.get("usage")) is not None:
                        usage = Usage(counted.get("prompt_tokens"),
                                      counted.get("completion_tokens"))
                    if not (choices := chunk.get("choices")):
                        continue
                    choice = choices[0]
                    finish = choice.get("finish_reason") or finish
                    delta = choice.get("delta") or {}
                    if content := delta.get("content"):
                        parts.append(content)
                        yield content
                    for piece in delta.get("tool_calls") or ():
                        function = piece.get("function")
                        yield calls.add(ToolCallDelta(
                            piece.get("index"), piece.get("id"),
                            function.get("name") if function else None,
                            (function.get("arguments") or "") if function else ""))
        except openai.APIConnectionError as exc:
            if not parts and not calls.started:
                raise translate_error(exc) from exc
            raise BackendError("the model's stream broke off before the answer was complete",
                               partial="".join(parts)) from exc
        except openai.APIError as exc:
            raise translate_error(exc, partial="".join(parts)) from exc
        except Exception as exc:  # a stream cut mid-way may surface as a transport error
            raise BackendError(
                f"the model's stream broke off: {type(exc).__name__}", partial="".join(parts)
            ) from exc
        finally:
            endpoint.in_flight -= 1
        if finish is None:
            raise BackendError("the model's stream ended before it finished",
                               partial="".join(parts))
        yield Completion("".join(parts), usage, served_model, finish, calls.whole())

    def count_tokens(self, role: str, content: str, model: str) -> int:
        return count_message_tokens(model, content)

    def context_window(self, model: str) -> int:
        return self._window_override or context_window_for(model)

    async def aclose(self) -> None:
        for server in self._servers:
            await server.client.close()


class _CallAssembly:
    """A streamed answer's tool calls, put together from their pieces by index."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str | None, str | None, list[str]]] = {}

    @property
    def started(self) -> bool:
        return bool(self._calls)

    def add(self, piece: ToolCallDelta) -> ToolCallDelta:
        call_id, name, arguments = self._calls.get(piece.index, (None, None, []))
        arguments.append(piece.arguments)
        self._calls[piece.index] = (call_id or piece.id, name or piece.name, arguments)
        return piece

    def whole(self) -> tuple[ToolCall, ...]:
        calls = []
        for index in sorted(self._calls):
            call_id, name, arguments = self._calls[index]
            if not name:
                raise BackendError("the model streamed a tool call without a name")
            calls.append(ToolCall(call_id or _new_call_id(), name, "".join(arguments)))
        return tuple(calls)


def _new_call_id() -> str:
    """An id for a call the server sent without one (some self-hosted servers do): its
    output must name it, so it needs one unique within the chat."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _with_id(call: ToolCall) -> ToolCall:
    return call if call.id else replace(call, id=_new_call_id())


def route_key(messages: ChatMessages) -> str:
    """What places a call on the ring: the chat's id during a turn; otherwise (titles,
    summaries, stateless completions) the messages up to the first user message, which a
    client resending a growing history keeps the same from call to call."""
    chat_id = conversation.get()
    if chat_id is not None:
        return chat_id
    head = []
    for message in messages:
        head.append(f"{message.get('role')}\x00{message.get('content')}")
        if message.get("role") == "user":
            break
    return "\x01".join(head)


def _server_side(exc: openai.APIError) -> bool:
    """A status that another server of the same model may well not give."""
    code = getattr(exc, "status_code", None)
    return isinstance(code, int) and (code >= 500 or code in (408, 429))


def completion_of(response: object, model: str) -> Completion:
    """Read a chat completion's JSON body; anything malformed is the backend's error."""
    try:
        choice = response["choices"][0]  # type: ignore[index]
        message = choice["message"]
        text = message.get("content") or ""
        usage = response.get("usage") or {}  # type: ignore[attr-defined]
        if not isinstance(text, str):
            raise TypeError(text)
        calls = tuple(_with_id(ToolCall.from_openai(call))
                      for call in message.get("tool_calls") or ())
        return Completion(
            text=text,
            usage=Usage(int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0)),
            model=str(response.get("model") or model),  # type: ignore[attr-defined]
            finish_reason=choice.get("finish_reason"),
            tool_calls=calls,
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        raise BackendError("the model's answer is not a chat completion") from None


def translate_error(exc: openai.APIError, partial: str = "") -> BackendError:
    """One place that turns the client's error hierarchy into ours."""
    if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
        return BackendTimeout("the model did not answer in time", partial=partial)
    if isinstance(exc, openai.APITimeoutError):  # aiohttp's refusals arrive as timeouts
        return BackendError("cannot reach the model backend: connection refused",
                            partial=partial)
    if isinstance(exc, openai.APIConnectionError):
        return BackendError(f"cannot reach the model backend: {exc.message}", partial=partial)
    if isinstance(exc, openai.APIStatusError):
        return BackendError(
            f"the model backend answered {exc.status_code}: {_short(exc)}",
            status_code=exc.status_code,
            partial=partial,
        )
    return BackendError(f"model backend error: {exc.message}", partial=partial)


def _refused(exc: BaseException) -> bool:
    """Whether a connection was refused somewhere down ``exc``'s chain of causes."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _short(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return exc.message[:300]
