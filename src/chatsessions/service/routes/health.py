"""Operations endpoints: health (checks the database) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from chatsessions import DatabaseUnavailable
from chatsessions.service.errors import ServiceError
from chatsessions.service.schemas import ErrorBody, Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health,
            responses={503: {"model": ErrorBody, "description": "the database is unreachable"}})
async def healthz(request: Request) -> Health:
    try:
        await request.app.state.sessions.ping()
    except DatabaseUnavailable as exc:
        raise ServiceError(503, exc.type, f"database unavailable: {exc.reason}",
                           {"Retry-After": str(max(1, round(exc.retry_after)))}) from None
    except Exception as exc:
        raise ServiceError(
            503, "unavailable", f"database check failed: {type(exc).__name__}") from None
    return Health(status="ok", database="ok")


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}})
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")
