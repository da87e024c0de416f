"""Errors become HTTP responses here, once: ``{"error": {"type", "message"}}``, no traces."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from chatsessions.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ChatBusy,
    ChatExists,
    ChatMoved,
    ChatNotFound,
    ChatSessionsError,
    InvalidInput,
    ToolCallsPending,
    TurnInterrupted,
)
from chatsessions.service.schemas import PATTERN_HINTS

log = logging.getLogger("chatsessions.service")

STATUS: list[tuple[type[ChatSessionsError], int]] = [
    (ChatNotFound, 404),
    (ChatExists, 409),
    (InvalidInput, 422),
    (ChatBusy, 409),
    (ChatMoved, 409),
    (ToolCallsPending, 409),
    (TurnInterrupted, 409),
    (BackendTimeout, 504),
    (BackendUnavailable, 503),
    (BackendError, 502),
]

HTTP_TYPES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
    413: "request_too_large", 415: "unsupported_media_type", 422: "invalid_request",
    429: "rate_limited",
}


class ServiceError(Exception):
    """An HTTP-level refusal raised by the service itself (auth, limits)."""

    def __init__(self, status: int, type_: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.headers = headers or {}


def error_body(type_: str, message: str) -> dict[str, Any]:
    # Messages may quote the caller's input: never let a lone surrogate break the reply.
    safe = message.encode("utf-8", "replace").decode("utf-8")
    return {"error": {"type": type_, "message": safe}}


def error_response(status: int, type_: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(type_, message), status_code=status, headers=headers)


def status_of(exc: ChatSessionsError) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def describe_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    """(status, type, message) naming each offending field precisely."""
    problems = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            return 400, "invalid_json", f"malformed JSON: {ctx.get('error', 'cannot parse')}"
        location = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        message = err.get("msg")
        if err.get("type") == "string_pattern_mismatch":
            message = PATTERN_HINTS.get(str((err.get("ctx") or {}).get("pattern")), message)
        problems.append(f"{location}: {message}")
    return 422, "invalid_request", "; ".join(problems) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ChatSessionsError)
    async def _domain(_: Request, exc: ChatSessionsError) -> JSONResponse:
        headers = {}
        if isinstance(exc, ChatBusy):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        body = error_body(exc.type, str(exc))
        if isinstance(exc, BackendError) and exc.chat_id is not None:
            body["error"]["chat_id"] = exc.chat_id  # where a failed edit can be retried
        return JSONResponse(body, status_code=status_of(exc), headers=headers)

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.type, str(exc), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*describe_validation(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, HTTP_TYPES.get(exc.status_code, "error"),
                              str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; see the service log")
