"""An OpenAI-compatible API under /v1, so ``openai.OpenAI(base_url=.../v1)`` works unchanged.

Models, stateless chat completions, and the Conversations + Responses subset with
server-side state kept as ordinary chats (visible through ``/chats`` too). Text and
function tools (calls and their outputs, stored in the chat's history): everything else
is refused with a 400 in OpenAI's error format.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from chatsessions.service.openai_compat import (
    background,
    chat_completions,
    conversations,
    models,
    responses,
)
from chatsessions.service.openai_compat.errors import ERRORS, OpenAIRoute, not_found

__all__ = ["router"]

_fallback = APIRouter(route_class=OpenAIRoute, responses=ERRORS)


@_fallback.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                     include_in_schema=False)
async def unknown(path: str, request: Request) -> Any:
    """Anything else under /v1 is a 404 in OpenAI's format, as OpenAI answers it."""
    raise not_found(f"Invalid URL ({request.method} /v1/{path})")


router = APIRouter(prefix="/v1")
for _resource in (models, chat_completions, conversations, background, responses):
    router.include_router(_resource.router)
router.include_router(_fallback)  # last: only what no route above matches
