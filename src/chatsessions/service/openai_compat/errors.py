"""Errors on /v1 in OpenAI's shape, so the official client raises the matching class.

``{"error": {"message", "type", "param", "code"}}``: 400 becomes ``BadRequestError``, 404
``NotFoundError``, 5xx ``InternalServerError`` and so on. The rest of the service keeps its
own error format; these routes convert every exception themselves (``OpenAIRoute``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from chatsessions.errors import ChatSessionsError, ContextTooLong
from chatsessions.service.errors import ServiceError, retry_headers, status_of

log = logging.getLogger("chatsessions.service.openai")

INVALID = "invalid_request_error"
SERVER = "server_error"


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """Every /v1 error has this shape, as OpenAI's do."""

    error: OpenAIErrorDetail


def _documented(description: str) -> dict[str, Any]:
    return {"model": OpenAIErrorBody, "description": description}


#: the statuses every /v1 route may answer with besides success
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _documented("invalid or unsupported request (the client's BadRequestError)"),
    401: _documented("missing or invalid API key, once keys are configured"),
    404: _documented("unknown id, or another tenant's"),
    409: _documented("the conversation is busy with another turn"),
    413: _documented("request body too large"),
    429: _documented("rate limit of the API key reached"),
    500: _documented("unexpected error"),
    502: _documented("the model backend failed; the input is kept"),
    503: _documented("the model backend or the database is unavailable (Retry-After)"),
    504: _documented("the model backend did not answer in time"),
}


class OpenAIError(Exception):
    """A refusal to report exactly as OpenAI would: status, message, type, param, code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = INVALID,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None,
                code: str | None = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def unsupported(param: str, what: str | None = None) -> OpenAIError:
    """400 for a feature this server does not offer (tools, images, audio...)."""
    message = what or f"'{param}' is not supported by this server"
    return OpenAIError(400, f"{message}; only text input and text output are supported",
                       param=param, code="unsupported_parameter")


def not_found(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(404, message, param=param, code="not_found")


def from_domain(exc: ChatSessionsError) -> OpenAIError:
    """The library's errors, with the statuses the rest of the service uses, except that
    invalid input is OpenAI's 400 rather than 422."""
    status = status_of(exc)
    if status == 422:
        status = 400
    code = "context_length_exceeded" if isinstance(exc, ContextTooLong) else exc.type
    return OpenAIError(status, str(exc), type_=SERVER if status >= 500 else INVALID, code=code,
                       headers=retry_headers(exc))


def from_validation(exc: RequestValidationError) -> OpenAIError:
    """The first problem, naming the offending parameter as OpenAI does."""
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return bad_request("We could not parse the JSON body of your request.",
                               code="invalid_json")
        where = [str(p) for p in err.get("loc", ()) if p != "body"]
        # pydantic names the union branch it tried ("str", "list[...]"): not a parameter
        param = ".".join(p for p in where if not p.startswith(("str", "list[", "dict[")))
        if err.get("type") == "missing":
            return bad_request(f"Missing required parameter: '{param}'.", param or None,
                               code="missing_required_parameter")
        return bad_request(f"Invalid value for '{param or 'body'}': {err.get('msg')}",
                           param or None)
    return bad_request("Invalid request.")


def to_openai(exc: Exception) -> OpenAIError:
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, ChatSessionsError):
        return from_domain(exc)
    if isinstance(exc, RequestValidationError):
        return from_validation(exc)
    if isinstance(exc, ServiceError):
        code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(exc.status, exc.type)
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(exc.status, INVALID)
        return OpenAIError(exc.status, str(exc), type_=kind, code=code, headers=exc.headers)
    if isinstance(exc, HTTPException):
        return OpenAIError(exc.status_code, str(exc.detail),
                           type_=SERVER if exc.status_code >= 500 else INVALID,
                           headers=dict(exc.headers or {}))
    return OpenAIError(500, "The server had an error while processing your request.",
                       type_=SERVER, code="internal_error")


class OpenAIRoute(APIRoute):
    """A route whose every failure (auth, validation, the library, a bug) answers in
    OpenAI's error format."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                error = to_openai(exc)
                if error.status >= 500 and not isinstance(
                        exc, (OpenAIError, ChatSessionsError, ServiceError, HTTPException)):
                    log.exception("unhandled error on %s %s", request.method, request.url.path)
                return error.response()

        return route
