"""The service's own pages: the web console and the API docs, served from files shipped
in the package (no CDN: both work offline) under a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"

#: Only our own files run: no inline script or style, no other origin, no framing. Model
#: output in the console is sanitized as well; this is the second line.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'",
    "form-action 'self'",
])
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class _Files(StaticFiles):
    """Static files with the page headers, so an HTML file opened under /static is held
    to the same policy as the routes below."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / name, headers=PAGE_HEADERS)


def install(app: FastAPI) -> None:
    """Serve the console at ``/`` and Swagger UI at ``/docs`` (the app is built with
    ``docs_url=None``: FastAPI's own page loads Swagger UI from a CDN)."""
    if not STATIC.is_dir():
        return
    app.mount("/static", _Files(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return _page("index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return _page("docs.html")
