"""GET /v1/models: the model(s) of the configured backend."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from chatsessions.service.deps import SessionsDep
from chatsessions.service.openai_compat.errors import ERRORS, OpenAIRoute, not_found

router = APIRouter(route_class=OpenAIRoute, responses=ERRORS, tags=["openai"])


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "chatsessions"}


@router.get("/models")
async def list_models(sessions: SessionsDep) -> dict[str, Any]:
    """The model chats use by default, on the configured backend."""
    return {"object": "list", "data": [model_object(sessions.get_backend().default_model)]}


@router.get("/models/{model}")
async def retrieve_model(model: str, sessions: SessionsDep) -> dict[str, Any]:
    if model != sessions.get_backend().default_model:
        raise not_found(f"The model '{model}' does not exist.", "model")
    return model_object(model)
