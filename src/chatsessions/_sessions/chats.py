"""Chats as records: create (idempotently), read, list, update, archive, delete."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from chatsessions._sessions.core import _UNSET, SessionsCore
from chatsessions.engine.tools import ToolSpec, check_tool_choice, check_tools, functions_of
from chatsessions.errors import ChatNotFound, InvalidInput
from chatsessions.types import Chat, ContextPolicy, GenerationParams, Tool, utcnow
from chatsessions.validation import (
    MAX_TITLE_CHARS,
    check_context_policy,
    check_label,
    check_metadata,
    check_params,
    check_text,
    check_when,
)


class ChatMethods(SessionsCore):
    async def create_chat(
        self,
        system_prompt: str | None = None,
        *,
        model: str | None = None,
        backend: str | None = None,
        params: GenerationParams | dict[str, Any] | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        chat_id: str | None = None,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        context_policy: ContextPolicy | str = ContextPolicy.TRIM,
        tools: Sequence[ToolSpec] | None = None,
        tool_choice: str | None = None,
    ) -> str:
        """Start a chat whose history begins with the system prompt; return its id.

        ``context_policy`` says what happens once the chat outgrows the model's window:
        ``trim`` the oldest turns, ``summarize`` them, or refuse (``none``).

        ``tools`` are offered to the model on every turn: definitions (:class:`Tool`, or
        dicts in OpenAI's shape) and Python functions, which :meth:`send` runs itself
        (their definitions are stored; the functions stay with this object).
        ``tool_choice`` (``auto``, ``none``, ``required`` or one of their names) is kept
        with them; a call's own ``tool_choice`` wins over it.

        Repeating a call with the same ``idempotency_key`` returns the same chat instead of
        creating another; the same key with different arguments is refused.
        """
        store = await self._ready()
        backend_name = backend or self._runtime.models.default_backend
        chat = Chat(
            id=chat_id or str(uuid.uuid4()),
            tenant_id=self.tenant_id,
            system_prompt=self._check_system_prompt(
                self.settings.system_prompt if system_prompt is None else system_prompt
            ),
            title=None if title is None else check_label(
                title, field="title", max_chars=MAX_TITLE_CHARS),
            backend=backend_name,
            model=check_label(model, field="model", max_chars=200) if model
            else self._runtime.models.backend(backend_name).default_model,
            params=check_params(params).as_kwargs(),
            metadata=check_metadata(metadata),
            expires_at=check_when(expires_at, field="expires_at"),
            context_policy=check_context_policy(context_policy),
            tools=check_tools(tools),
        )
        chat = replace(chat, tool_choice=check_tool_choice(tool_choice, chat.tools))
        self._remember(chat.id, tools)
        if idempotency_key is None:
            await store.create_chat(chat)
            self._runtime.created(chat)
            return chat.id
        check_text(idempotency_key, field="idempotency key", max_chars=200)
        digest = request_hash(chat)
        for _ in range(2):  # the second look settles a race with a concurrent twin
            earlier = await store.chat_by_idempotency_key(self.tenant_id, idempotency_key)
            if earlier is not None:
                if earlier[1] != digest:
                    raise InvalidInput(
                        "this Idempotency-Key was already used to create a different chat")
                return earlier[0].id
            if await store.create_chat(chat, idempotency_key=idempotency_key,
                                       request_hash=digest) is not None:
                return chat.id
        raise InvalidInput("this Idempotency-Key is in use by a concurrent request")

    async def get_chat(self, chat_id: str) -> Chat:
        store = await self._ready()
        chat = await store.get_chat(chat_id, self.tenant_id)
        if chat is None:
            raise ChatNotFound(chat_id)
        return chat

    async def list_chats(
        self,
        *,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
        title_contains: str | None = None,
        metadata: dict[str, Any] | None = None,
        include_archived: bool = False,
        archived: bool | None = None,
    ) -> list[Chat]:
        """Newest first; pass the last chat's ``(created_at, id)`` as ``before`` to page.

        Archived chats are left out unless ``include_archived``; ``archived=True`` lists
        only them (and ``False`` only the others), whatever ``include_archived`` says."""
        store = await self._ready()
        if archived is None and not include_archived:
            archived = False
        return await store.list_chats(
            self.tenant_id, limit=limit, before=before,
            title_contains=title_contains, metadata=metadata, archived=archived,
        )

    async def update_chat(
        self,
        chat_id: str,
        *,
        title: str | None = _UNSET,
        system_prompt: str = _UNSET,
        model: str = _UNSET,
        params: GenerationParams | dict[str, Any] = _UNSET,
        metadata: dict[str, Any] = _UNSET,
        expires_at: datetime | None = _UNSET,
        context_policy: ContextPolicy | str = _UNSET,
        tools: Sequence[ToolSpec] | None = _UNSET,
        tool_choice: str | None = _UNSET,
    ) -> Chat:
        """Change the fields given; ``title=None``, ``expires_at=None``, ``tools=None``
        and ``tool_choice=None`` clear them (``tools`` and ``tool_choice`` as for
        :meth:`create_chat`; a choice naming a tool must name one the chat keeps)."""
        store = await self._ready()
        changes: dict[str, Any] = {}
        if title is not _UNSET:
            changes["title"] = None if title is None else check_label(
                title, field="title", max_chars=MAX_TITLE_CHARS)
        if system_prompt is not _UNSET:
            changes["system_prompt"] = self._check_system_prompt(system_prompt)
        if model is not _UNSET:
            changes["model"] = check_label(model, field="model", max_chars=200)
        if params is not _UNSET:
            changes["params"] = check_params(params).as_kwargs()
        if metadata is not _UNSET:
            changes["metadata"] = check_metadata(metadata)
        if expires_at is not _UNSET:
            changes["expires_at"] = check_when(expires_at, field="expires_at")
        if context_policy is not _UNSET:
            changes["context_policy"] = check_context_policy(context_policy)
        if tools is not _UNSET:
            changes["tools"] = check_tools(tools)
        if tool_choice is not _UNSET or "tools" in changes:
            changes.update(await self._tool_choice(chat_id, changes.get("tools"),
                                                   tool_choice))
        if not changes:
            return await self.get_chat(chat_id)
        chat = await store.update_chat(chat_id, self.tenant_id, changes)
        if chat is None:
            raise ChatNotFound(chat_id)
        if tools is not _UNSET:
            self._runtime.functions.pop(chat_id, None)
            self._remember(chat_id, tools)
        return chat

    async def _tool_choice(self, chat_id: str, tools: tuple[Tool, ...] | None,
                           choice: str | None) -> dict[str, Any]:
        """The checked ``tool_choice`` change of an update: a new choice is checked
        against the tools the chat will have, and new tools against the kept choice."""
        if tools is not None and choice is not _UNSET:
            return {"tool_choice": check_tool_choice(choice, tools)}
        chat = await self.get_chat(chat_id)
        if choice is not _UNSET:
            return {"tool_choice": check_tool_choice(choice, chat.tools)}
        try:
            check_tool_choice(chat.tool_choice, tools or ())
        except InvalidInput:  # it named a tool the chat no longer has
            return {"tool_choice": None}
        return {}

    def _remember(self, chat_id: str, tools: Sequence[ToolSpec] | None) -> None:
        """Keep the Python functions among a chat's tools, for :meth:`send` to run."""
        functions = functions_of(tools)
        if functions:
            self._runtime.functions[chat_id] = functions

    async def delete_chat(self, chat_id: str) -> None:
        """Delete the chat and every message of it, for real."""
        store = await self._ready()
        if not await store.delete_chat(chat_id, self.tenant_id):
            raise ChatNotFound(chat_id)
        self._runtime.cache.discard(chat_id)
        self._runtime.functions.pop(chat_id, None)

    async def archive_chat(self, chat_id: str) -> Chat:
        """Hide the chat from :meth:`list_chats` (unless asked for); it stays usable."""
        return await self._set_archived(chat_id, archived=True)

    async def unarchive_chat(self, chat_id: str) -> Chat:
        return await self._set_archived(chat_id, archived=False)

    async def _set_archived(self, chat_id: str, *, archived: bool) -> Chat:
        store = await self._ready()
        chat = await store.update_chat(chat_id, self.tenant_id,
                                       {"archived_at": utcnow() if archived else None})
        if chat is None:
            raise ChatNotFound(chat_id)
        return chat


def request_hash(chat: Chat) -> str:
    """What makes two chat creations "the same request" for idempotency."""
    fields: list[Any] = [chat.system_prompt, chat.title, chat.backend, chat.model,
                         chat.params, chat.metadata]
    if chat.context_policy is not ContextPolicy.TRIM:  # hashes stored before it stay valid
        fields.append(chat.context_policy.value)
    if chat.tools:
        fields.append([tool.to_dict() for tool in chat.tools])
    if chat.tool_choice is not None:
        fields.append({"tool_choice": chat.tool_choice})
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
