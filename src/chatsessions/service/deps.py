"""Dependencies the routes declare: the caller's tenant view of the sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatsessions import AsyncChatSessions

bearer = HTTPBearer(auto_error=False, description="an API key from `chatsessions keys create`")


async def tenant_sessions(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> AsyncChatSessions:
    state = request.app.state
    tenant = await state.auth.tenant_for(credentials.credentials if credentials else None)
    sessions: AsyncChatSessions = state.sessions
    return sessions.for_tenant(tenant)


SessionsDep = Annotated[AsyncChatSessions, Depends(tenant_sessions)]

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
    description="repeat a request safely: the same key returns the first result "
    "(or waits for it); the same key with a different body is a 422",
)]
