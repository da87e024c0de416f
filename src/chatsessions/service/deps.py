"""Dependencies the routes declare: the caller's tenant view of the sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatsessions.sessions import AsyncChatSessions

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
