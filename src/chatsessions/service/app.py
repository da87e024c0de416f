"""The FastAPI application factory: routes, errors, limits, the web console."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from chatsessions import AsyncChatSessions, Settings, __version__
from chatsessions.service import errors, openai_compat, pages
from chatsessions.service.auth import Authenticator
from chatsessions.service.limits import BodySizeLimit
from chatsessions.service.metrics import Metrics
from chatsessions.service.routes import (
    branching,
    chats,
    health,
    messages,
    search,
    tools,
    transfer,
    usage,
)

log = logging.getLogger("chatsessions.service")

DESCRIPTION = """Many simultaneous, durable conversations with large language models.

Every error is `{"error": {"type": ..., "message": ...}}`. With API keys configured, send
`Authorization: Bearer KEY`; a tenant only ever sees its own chats.
"""


#: allocations between two collections of the youngest generation (CPython's default: 700)
GC_FIRST_GENERATION = 7_000


def create_app(
    settings: Settings | None = None, *, sessions: AsyncChatSessions | None = None,
    own_process: bool = False,
) -> FastAPI:
    """Build the service. Sessions are created (and closed) by the app's lifespan, on the
    server's event loop, unless an already-built ``sessions`` is handed in. With
    ``own_process`` (``chatsessions serve``) the startup also tunes the garbage collector
    (:func:`tune_gc`)."""
    settings = settings or (sessions.settings if sessions else Settings())
    owned = sessions is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live = sessions or AsyncChatSessions(settings)
        await live.open()
        app.state.sessions = live
        app.state.auth = Authenticator(live.keys, settings.rate_limit_per_minute)
        sweeper = asyncio.create_task(_sweep_forever(live, settings.lease_ttl))
        if own_process:
            tune_gc()
        try:
            yield
        finally:
            sweeper.cancel()
            if owned:
                await live.close()

    # /docs comes from pages.install, on Swagger UI shipped with the package.
    app = FastAPI(title="chatsessions", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = Metrics()
    errors.install(app)
    app.include_router(transfer.router)
    app.include_router(chats.router)
    app.include_router(messages.router)
    app.include_router(tools.router)
    app.include_router(branching.router)
    app.include_router(search.router)
    app.include_router(usage.router)
    app.include_router(health.router)
    app.include_router(openai_compat.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    install_openapi(app)

    pages.install(app)
    return app


def install_openapi(app: FastAPI) -> None:
    """Document what every operation can answer: our error shape, not FastAPI's default
    validation body, and the statuses auth and limits add everywhere."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        common = {"401": "missing or invalid API key", "413": "request body too large",
                  "429": "rate limited"}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "invalid input", "content": error}
                if path.startswith("/v1/") or path in ("/healthz", "/metrics"):
                    continue
                for status, text in common.items():
                    responses.setdefault(status, {"description": text, "content": error})
        schemas = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _sweep_forever(sessions: AsyncChatSessions, period: float) -> None:
    """Fail turns whose replica died (once their lease expired), expire old keys and
    delete expired chats."""
    while True:
        await asyncio.sleep(period)
        try:
            await sessions.sweep()
        except Exception:
            log.exception("sweep failed; retrying next period")


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several workers): settings from the environment;
    the service is the process's whole job."""
    return create_app(Settings(), own_process=True)


def tune_gc() -> None:
    """Keep the garbage collector's cost per request small in a long-lived server.

    By the time the service has started, the interpreter holds a few hundred thousand
    objects (FastAPI's and pydantic's schemas, the openai client's types) that live as
    long as the process; every full collection walked them all again. ``gc.freeze`` moves
    them out of the collector's sight, and a larger first-generation threshold lets the
    short-lived objects of a request die before the collector runs at all: together a
    fifth of the service's CPU per turn (bench/service.py). Only in a process that is the
    service alone: an application embedding the app keeps its own settings.
    """
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION, older, oldest)
