"""A real OpenAI-compatible HTTP server for tests and benchmarks.

Mocking the ``openai`` client only proves that code calls a mock. :class:`FakeLLMServer`
speaks the actual wire protocol on a loopback port, so the official client (retries,
timeouts, streaming, error mapping) runs unmodified, while answers stay deterministic and
faults can be injected on demand. Run it in another process with
``python -m chatsessions.testing --port 8099``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import random
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chatsessions._fake_formats import format_problem, formatted_answer
from chatsessions._fake_tools import (
    answer_from_outputs,
    call_deltas,
    digest,
    text_of,
    tool_calls_for,
)

__all__ = ["FakeLLMServer", "Fault", "RecordedRequest"]

_PIECE = re.compile(r"(?<=\s)(?=\S)")


@dataclass(frozen=True)
class Fault:
    """One misbehaviour to apply to a chat request; build it with the classmethods."""

    kind: Literal["status", "timeout", "cut_stream", "stall", "malformed"]
    code: int = 0
    retry_after: float | None = None
    seconds: float = 0.0
    after_chunks: int = 0

    @classmethod
    def status(cls, code: int, retry_after: float | None = None) -> Fault:
        """Answer with HTTP ``code`` and an OpenAI-style error body.

        ``retry_after`` (seconds) is sent as ``Retry-After`` (whole seconds, rounded up) and as
        ``retry-after-ms``, which the openai client prefers. The client ignores a zero delay
        and falls back to its own backoff, so ``retry_after=0`` is sent as 1 ms: retry now.
        """
        if not 400 <= code <= 599 or (retry_after is not None and retry_after < 0):
            raise ValueError("need an HTTP error code (4xx/5xx) and retry_after >= 0")
        return cls("status", code=code, retry_after=retry_after)

    @classmethod
    def timeout(cls, seconds: float = 30.0) -> Fault:
        """Wait ``seconds`` before answering normally, so a client with a shorter timeout gives up.

        The wait does not block other requests and ends at once when the server stops.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("timeout", seconds=seconds)

    @classmethod
    def cut_stream(cls, after_chunks: int = 2) -> Fault:
        """Drop the connection part-way through the response.

        Streaming: the role chunk and ``after_chunks`` content (or tool-call) chunks are sent,
        then the connection closes without the final chunk or ``[DONE]``. Non-streaming: the headers
        (with the full Content-Length) and half of the body are sent, then the connection
        closes. Either way the client sees a broken transfer (the openai client raises
        ``APIConnectionError``), never an HTTP 500.
        """
        if after_chunks < 0:
            raise ValueError("after_chunks must be >= 0")
        return cls("cut_stream", after_chunks=after_chunks)

    @classmethod
    def stall(cls, after_chunks: int = 2, seconds: float = 30.0) -> Fault:
        """Stop part-way for ``seconds``, then finish normally.

        Streaming: the role chunk and ``after_chunks`` content chunks are sent, then nothing
        for ``seconds`` (the connection stays open). Non-streaming: like :meth:`timeout`.
        A caller's total deadline, not its wait for the first byte, has to end the call.
        """
        if after_chunks < 0 or seconds < 0:
            raise ValueError("need after_chunks >= 0 and seconds >= 0")
        return cls("stall", after_chunks=after_chunks, seconds=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with JSON that is not a chat completion (a broken proxy, say)."""
        return cls("malformed")

    @property
    def name(self) -> str:
        """Short label stored in :attr:`RecordedRequest.fault`, e.g. ``status_429``."""
        return f"status_{self.code}" if self.kind == "status" else self.kind


# Timeouts are left out: every test that hit one would become slow.
_RANDOM_FAULTS = (
    Fault.status(429, retry_after=0),
    Fault.status(500),
    Fault.status(503),
    Fault.cut_stream(2),
)


@dataclass(frozen=True)
class RecordedRequest:
    """One chat completion request as the server received it."""

    messages: list[dict[str, Any]]
    model: str
    stream: bool
    params: dict[str, Any] = field(default_factory=dict)
    fault: str | None = None
    at: float = 0.0
    #: prompt tokens found in the simulated prefix cache (0 when it is off)
    cached_tokens: int = 0


class _ConnectionCut(Exception):
    """Raised inside a response body so uvicorn drops the connection mid-transfer."""


class _QuietCuts(logging.Filter):
    """Hide uvicorn's traceback for connections cut on purpose; real errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return not isinstance(exc, _ConnectionCut)


_text = text_of


def _pieces(text: str) -> list[str]:
    """Word-ish chunks that keep their trailing whitespace, so ``"".join`` restores ``text``."""
    return [p for p in _PIECE.split(text) if p]


def _error(
    status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
) -> Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _fault_error(fault: Fault) -> Response:
    if fault.code == 429:
        type_ = code = "rate_limit_exceeded"
    elif fault.code >= 500:
        type_ = code = "server_error"
    else:
        type_, code = "invalid_request_error", str(fault.code)
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["retry-after"] = str(math.ceil(fault.retry_after))
        headers["retry-after-ms"] = str(max(1, round(fault.retry_after * 1000)))
    return _error(fault.code, f"Injected fault: HTTP {fault.code}.", type_, code, headers)


async def _json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (an empty body counts as ``{}``)."""
    raw = await request.body()
    body = json.loads(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


async def _cut_body(data: bytes) -> AsyncIterator[bytes]:
    """Half of ``data``, then a broken connection."""
    yield data[: len(data) // 2]
    raise _ConnectionCut("response cut by injected fault")


class FakeLLMServer:
    """An OpenAI-compatible chat server with deterministic answers and injectable faults.

    It serves ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain and streaming,
    with tool calls when offered tools: see :mod:`chatsessions._fake_tools` for the rules;
    JSON valid for a requested ``response_format``: see :mod:`chatsessions._fake_formats`),
    logs every chat request in :attr:`requests`, and can be driven from another process
    through ``GET /_fake/requests`` and ``POST /_fake/faults``, ``/_fake/config`` and
    ``/_fake/reset``. Faults come from the :meth:`inject` queue first, then at random with
    probability :attr:`fault_rate` from :attr:`random_faults`. :attr:`delay` seconds pass
    before every chat answer. ``max_tokens`` cuts the answer to that many words.

    With ``prefix_cache`` (seconds per token) it behaves like a model server with a prefix
    cache: the first token waits for the prompt tokens it has not seen, read one prompt at
    a time as a GPU would. It keeps the last prompt of each conversation (the messages up
    to the first user message name it), at most ``prefix_cache_size`` of them; a prompt's
    tokens that extend the kept one are cached, the rest are read again. Usage reports the
    cached ones as ``prompt_tokens_details.cached_tokens``, as OpenAI does.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fake-model",
        delay: float = 0.0,
        fault_rate: float = 0.0,
        seed: int = 0,
        prefix_cache: float = 0.0,
        prefix_cache_size: int = 1024,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0 or delay < 0:
            raise ValueError("need delay >= 0 and fault_rate within [0, 1]")
        if prefix_cache < 0 or prefix_cache_size < 1:
            raise ValueError("need prefix_cache >= 0 and prefix_cache_size >= 1")
        self.prefix_cache = prefix_cache
        self._prefixes = _PrefixCache(prefix_cache_size)
        self.host, self.port, self.model, self.seed = host, port, model, seed
        self.delay, self.fault_rate = delay, fault_rate
        self.random_faults: list[Fault] = list(_RANDOM_FAULTS)
        self.requests: list[RecordedRequest] = []
        self._initial = (delay, fault_rate)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._queue: deque[Fault] = deque()
        self._scripted: deque[str] = deque()
        self._ids = itertools.count(1)
        self._running: tuple[uvicorn.Server, threading.Thread, socket.socket] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._prefill: asyncio.Lock | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/_fake/requests", self._control, methods=["GET"]),
                Route("/_fake/{action:str}", self._control, methods=["POST"]),
            ],
            exception_handlers={HTTPException: self._http_error},
            lifespan=self._lifespan,
        )

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        if self.port == 0:
            raise RuntimeError("FakeLLMServer is not started; its port is not known yet")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as ``openai.OpenAI(base_url=...)``."""
        return self.url + "/v1"

    def start(self) -> FakeLLMServer:
        """Serve from a daemon thread with its own event loop; return once accepting.

        With ``port=0`` a free port is bound here, so :attr:`url` is final before serving.
        """
        if self._running is not None:
            raise RuntimeError("FakeLLMServer is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family, backlog=8192)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            loop="auto",  # uvloop and httptools when installed: this is a benchmark baseline
            http="auto",
            backlog=8192,
            log_config=None,  # leave the host application's logging alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        error_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _QuietCuts) for f in error_log.filters):
            error_log.addFilter(_QuietCuts())
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, args=([sock],), name="FakeLLM", daemon=True)
        self._running = (server, thread, sock)
        thread.start()
        deadline = time.monotonic() + 10.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"FakeLLMServer could not start on {self.host}:{self.port}")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        """Stop serving; pending delays and timeout faults end at once. Safe to call twice."""
        if self._running is None:
            return
        server, thread, sock = self._running
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        server.should_exit = True
        thread.join(timeout=10.0)
        sock.close()
        self._running = self._loop = self._stopping = self._prefill = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        yield

    def _prefill_lock(self) -> asyncio.Lock:
        if self._prefill is None:  # made on the server's own loop
            self._prefill = asyncio.Lock()
        return self._prefill

    async def _sleep(self, seconds: float) -> None:
        """Sleep that ends early when the server stops, so shutdown never waits on it."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for((self._stopping or asyncio.Event()).wait(), seconds)

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Give the next ``times`` chat requests this fault (before any random faults)."""
        with self._lock:
            self._queue.extend([fault] * times)

    def script(self, answer: str, times: int = 1) -> None:
        """Answer the next ``times`` chat requests with ``answer`` instead of
        :meth:`answer_for` (faults still apply): multi-line text, markdown, hostile markup."""
        with self._lock:
            self._scripted.extend([answer] * times)

    def reset(self) -> None:
        """Forget the log, queued faults and scripted answers; restore delay, fault rate,
        random faults and RNG.

        Restoring the settings too means one server can be shared by many tests.
        """
        with self._lock:
            self.requests.clear()
            self._queue.clear()
            self._scripted.clear()
            self._rng.seed(self.seed)
            self.delay, self.fault_rate = self._initial
            self.random_faults = list(_RANDOM_FAULTS)
            self._prefixes.clear()

    def chat_histories(self) -> list[list[dict[str, Any]]]:
        """The messages of each recorded chat request, in arrival order."""
        with self._lock:
            return [list(r.messages) for r in self.requests]

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self.fault_rate > 0 and self.random_faults and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.random_faults)
            return None

    @staticmethod
    def answer_for(messages: list[dict[str, Any]]) -> str:
        """The deterministic text answer to ``messages``; it depends on the whole history.

        ``users`` counts messages with role "user"; ``last`` is the last user message's
        content, whitespace-collapsed, cut to 60 characters; ``h`` is the first 8 hex digits
        of the SHA-256 of ``json.dumps([[role, content], ...], ensure_ascii=False,
        separators=(",", ":"))``. The answer is ``f'Reply {users} to "{last}" [{h}]'``;
        after tool outputs, it quotes them (see :mod:`chatsessions._fake_tools`).
        """
        quoted = answer_from_outputs(messages)
        if quoted is not None:
            return quoted
        users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        last = " ".join(users[-1].split())[:60] if users else ""
        return f'Reply {len(users)} to "{last}" [{digest(messages)}]'

    @staticmethod
    def tool_calls_for(messages: list[dict[str, Any]], request: dict[str, Any]
                       ) -> list[dict[str, Any]] | None:
        """The tool calls the fake answers ``request`` (its ``tools``, ``tool_choice``,
        ``parallel_tool_calls``) with, in OpenAI's shape; None for a text answer."""
        return tool_calls_for(messages, request)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error(exc.status_code, message, "invalid_request_error", code)

    async def _models(self, request: Request) -> Response:
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "chatsessions-fake"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _chat(self, request: Request) -> Response:
        try:
            body = await _json_object(request)
        except ValueError as exc:
            return _error(400, f"Invalid JSON body: {exc}", "invalid_request_error", "invalid_json")
        messages = body.get("messages")
        if not (
            isinstance(messages, list)
            and messages
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            msg = "'messages' must be a non-empty list of objects with a 'role'."
            return _error(400, msg, "invalid_request_error", "invalid_value")
        model = body.get("model")
        model = model if isinstance(model, str) else self.model
        stream = body.get("stream") is True
        params = {k: v for k, v in body.items() if k not in ("messages", "model", "stream")}
        problem = format_problem(body.get("response_format"))
        if problem is not None:
            return _error(400, problem, "invalid_request_error", "invalid_value")
        fault = self._next_fault()
        with self._lock:
            scripted = self._scripted.popleft() if self._scripted else None
            tokens = _prompt_tokens(messages)
            cached = self._prefixes.seen(messages, tokens) if self.prefix_cache else 0
        answer = self.answer_for(messages) if scripted is None else scripted
        if scripted is None:
            answer = formatted_answer(messages, body.get("response_format"), answer) or answer
        name = fault.name if fault is not None else None
        record = RecordedRequest(messages, model, stream, params, name, time.monotonic(),
                                 cached)
        with self._lock:
            self.requests.append(record)

        if self.prefix_cache:
            async with self._prefill_lock():  # one prompt read at a time
                await self._sleep(self.delay + (len(tokens) - cached) * self.prefix_cache)
        else:
            await self._sleep(self.delay)
        if fault is not None and fault.kind == "status":
            return _fault_error(fault)
        if fault is not None and (fault.kind == "timeout" or (fault.kind == "stall"
                                                              and not stream)):
            await self._sleep(fault.seconds)
        if fault is not None and fault.kind == "malformed":
            return JSONResponse({"object": "chat.completion", "choices": []})
        cut = fault.after_chunks if fault is not None and fault.kind == "cut_stream" else None

        calls = tool_calls_for(messages, body) if scripted is None else None
        pieces, finish = ([], "tool_calls") if calls else (_pieces(answer), "stop")
        limit = params.get("max_completion_tokens", params.get("max_tokens"))
        if isinstance(limit, int) and 0 <= limit < len(pieces):
            pieces = pieces[:limit]
            pieces[-1:] = [p.rstrip() for p in pieces[-1:]]
            finish = "length"
        answer = "".join(pieces)
        prompt = sum(len(_text(m.get("content")).split()) + 4 for m in messages)
        done = len(answer.split()) + sum(
            len(c["function"]["arguments"].split()) + 1 for c in calls or ())
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": done,
                                 "total_tokens": prompt + done}
        if self.prefix_cache:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        head = {"id": f"chatcmpl-fake-{next(self._ids)}", "created": int(time.time())}
        head["model"] = model

        if stream:
            options = params.get("stream_options")
            with_usage = isinstance(options, dict) and options.get("include_usage") is True
            stall = (None if fault is None or fault.kind != "stall"
                     else (fault.after_chunks, fault.seconds, self._sleep))
            deltas = call_deltas(calls) if calls else [{"content": p} for p in pieces]
            events = _sse(head, deltas, finish, usage if with_usage else None, cut, stall)
            return StreamingResponse(events, media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        if calls:
            message = {"role": "assistant", "content": None, "tool_calls": calls}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        completion = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        if cut is None:
            return JSONResponse(completion)
        data = json.dumps(completion).encode()
        headers = {"content-length": str(len(data))}
        return StreamingResponse(_cut_body(data), headers=headers, media_type="application/json")

    async def _control(self, request: Request) -> Response:
        """Let a test in another process read the log, queue faults, tune or reset the fake."""
        action = request.path_params.get("action", "requests")
        if action == "requests":
            with self._lock:
                return JSONResponse([dataclasses.asdict(r) for r in self.requests])
        if action == "reset":
            self.reset()
            return JSONResponse({"ok": True})
        if action not in ("faults", "config"):
            raise HTTPException(404, "Not Found")
        try:
            body = await _json_object(request)
            if action == "faults":
                self.inject(_fault_from_json(body), int(body.get("times", 1)))
                return JSONResponse({"queued": len(self._queue)})
            delay = float(body.get("delay", self.delay))
            fault_rate = float(body.get("fault_rate", self.fault_rate))
            if delay < 0 or not 0.0 <= fault_rate <= 1.0:
                raise ValueError("need delay >= 0 and fault_rate within [0, 1]")
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc), "invalid_request_error", "invalid_value")
        self.delay, self.fault_rate = delay, fault_rate
        return JSONResponse({"delay": delay, "fault_rate": fault_rate})


def _prompt_tokens(messages: list[dict[str, Any]]) -> list[str]:
    """The prompt as the fake counts it: a role marker, then the words of each message."""
    tokens: list[str] = []
    for message in messages:
        tokens.append(f"<{message.get('role')}>")
        tokens.extend(_text(message.get("content")).split())
    return tokens


class _PrefixCache:
    """The last prompt of each conversation, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._prompts: dict[str, list[str]] = {}

    def clear(self) -> None:
        self._prompts.clear()

    def seen(self, messages: list[dict[str, Any]], tokens: list[str]) -> int:
        """How many leading ``tokens`` this conversation's kept prompt already had; keep
        ``tokens`` as its prompt now."""
        first_user = next((i for i, m in enumerate(messages) if m.get("role") == "user"),
                          len(messages) - 1)
        key = digest(messages[:first_user + 1])
        kept = self._prompts.pop(key, [])
        common = 0
        for mine, theirs in zip(tokens, kept, strict=False):
            if mine != theirs:
                break
            common += 1
        self._prompts[key] = tokens
        while len(self._prompts) > self.size:
            del self._prompts[next(iter(self._prompts))]
        return common


def _fault_from_json(body: dict[str, Any]) -> Fault:
    kind = body.get("kind")
    if kind == "status":
        after = body.get("retry_after")
        return Fault.status(int(body.get("code", 500)), None if after is None else float(after))
    if kind == "timeout":
        return Fault.timeout(float(body.get("seconds", 30.0)))
    if kind == "cut_stream":
        return Fault.cut_stream(int(body.get("after_chunks", 2)))
    if kind == "stall":
        return Fault.stall(int(body.get("after_chunks", 2)), float(body.get("seconds", 30.0)))
    if kind == "malformed":
        return Fault.malformed()
    raise ValueError(
        f"unknown fault kind {kind!r}; use status, timeout, cut_stream, stall or malformed")


async def _sse(
    head: dict[str, Any],
    deltas: list[dict[str, Any]],
    finish: str,
    usage: dict[str, int] | None,
    cut_after: int | None,
    stall: tuple[int, float, Callable[[float], Awaitable[None]]] | None = None,
) -> AsyncIterator[bytes]:
    """Server-sent events for one streamed completion, or a stream broken after ``cut_after``,
    or one that pauses after ``stall[0]`` chunks for ``stall[1]`` seconds."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    def delta(content: dict[str, Any], reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": reason}
        return event([choice])

    yield delta({"role": "assistant", "content": ""})
    for index, piece in enumerate(deltas if cut_after is None else deltas[:cut_after]):
        if stall is not None and index == stall[0]:
            await stall[2](stall[1])
        yield delta(piece)
    if cut_after is not None:
        raise _ConnectionCut("stream cut by injected fault")
    yield delta({}, finish)
    if usage is not None:
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"


def main(argv: list[str] | None = None) -> None:
    """Run a fake server in the foreground, print its base URL, stop on SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m chatsessions.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="chance of a random fault")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix-cache", type=float, default=0.0,
                        help="seconds per prompt token not in the simulated prefix cache")
    parser.add_argument("--prefix-cache-size", type=int, default=1024,
                        help="conversations whose last prompt the simulated cache keeps")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with FakeLLMServer(**vars(parser.parse_args(argv))) as server:
        print(server.base_url, flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
