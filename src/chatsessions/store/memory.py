"""An in-memory store for throwaway use (scripts, notebooks, tests of your own code).

Same semantics as the SQL store, nothing survives the process.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from chatsessions.errors import ChatNotFound, InvalidInput
from chatsessions.types import ApiKey, Chat, Message, Role, TurnStatus, utcnow


class MemoryStore:
    def __init__(self) -> None:
        self._chats: dict[str, Chat] = {}
        self._messages: dict[str, list[Message]] = {}
        self._keys: dict[str, ApiKey] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def create_chat(self, chat: Chat) -> Chat:
        if chat.id in self._chats:
            raise InvalidInput(f"a chat with id {chat.id} already exists")
        self._chats[chat.id] = chat
        self._messages[chat.id] = []
        return chat

    async def get_chat(self, chat_id: str, tenant_id: str) -> Chat | None:
        chat = self._chats.get(chat_id)
        return chat if chat is not None and chat.tenant_id == tenant_id else None

    async def list_chats(
        self,
        tenant_id: str,
        *,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
        title_contains: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> list[Chat]:
        found = [
            c for c in self._chats.values()
            if c.tenant_id == tenant_id
            and (before is None or (c.created_at, c.id) < before)
            and (not title_contains or title_contains.lower() in (c.title or "").lower())
            and all(c.metadata.get(k) == v for k, v in (metadata or {}).items())
        ]
        found.sort(key=lambda c: (c.created_at, c.id), reverse=True)
        return found[:limit]

    async def update_chat(
        self, chat_id: str, tenant_id: str, changes: dict[str, Any]
    ) -> Chat | None:
        chat = await self.get_chat(chat_id, tenant_id)
        if chat is None:
            return None
        chat = replace(chat, **changes, updated_at=utcnow())
        self._chats[chat_id] = chat
        return chat

    async def delete_chat(self, chat_id: str, tenant_id: str) -> bool:
        if await self.get_chat(chat_id, tenant_id) is None:
            return False
        del self._chats[chat_id]
        del self._messages[chat_id]
        return True

    def _append(self, message: Message, prompt_tokens: int = 0,
                completion_tokens: int = 0) -> Message:
        chat = self._chats.get(message.chat_id)
        if chat is None:
            raise ChatNotFound(message.chat_id)
        stored = replace(message, seq=chat.message_count + 1)
        self._chats[chat.id] = replace(
            chat, message_count=stored.seq, updated_at=stored.created_at,
            prompt_tokens=chat.prompt_tokens + prompt_tokens,
            completion_tokens=chat.completion_tokens + completion_tokens,
        )
        self._messages[chat.id].append(stored)
        return stored

    def _set_status(self, user: Message, status: TurnStatus, error: str | None = None) -> None:
        rows = self._messages.get(user.chat_id, [])
        for index in range(len(rows) - 1, -1, -1):
            if rows[index].seq == user.seq:
                rows[index] = replace(rows[index], status=status, error=error)
                return

    async def add_user_message(
        self, chat_id: str, content: str, *, idempotency_key: str | None = None
    ) -> Message:
        return self._append(Message(
            chat_id=chat_id, seq=0, role=Role.USER, content=content,
            status=TurnStatus.PENDING, idempotency_key=idempotency_key,
        ))

    async def complete_turn(self, user: Message, answer: Message) -> Message:
        if user.chat_id not in self._chats:
            raise ChatNotFound(user.chat_id)
        self._set_status(user, TurnStatus.OK)
        return self._append(answer, answer.prompt_tokens, answer.completion_tokens)

    async def fail_turn(self, user: Message, error: str, partial: Message | None = None) -> None:
        self._set_status(user, TurnStatus.FAILED, error)
        if partial is not None and user.chat_id in self._chats:
            self._append(partial)

    async def messages(
        self, chat_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Message]:
        rows = [m for m in self._messages.get(chat_id, []) if m.seq > after_seq]
        return rows if limit is None else rows[:limit]

    async def recover_pending(self) -> int:
        return 0

    async def add_api_key(self, key: ApiKey) -> None:
        self._keys[key.id] = key

    async def list_api_keys(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    async def revoke_api_key(self, key_id: str) -> bool:
        key = self._keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return False
        self._keys[key_id] = replace(key, revoked_at=utcnow())
        return True

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        return next((k for k in self._keys.values()
                     if k.key_hash == key_hash and k.revoked_at is None), None)

    async def has_api_keys(self) -> bool:
        return any(k.revoked_at is None for k in self._keys.values())
