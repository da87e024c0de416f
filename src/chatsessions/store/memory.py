"""An in-memory store for throwaway use (scripts, notebooks, tests of your own code).

Same semantics as the SQL store, nothing survives the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from chatsessions.errors import ChatExists, ChatMoved, ChatNotFound, TurnInterrupted
from chatsessions.store.rows import TURN_FIELDS
from chatsessions.store.search import snippet, words
from chatsessions.types import (
    ApiKey,
    Chat,
    ContentPart,
    Message,
    ModelUsage,
    Role,
    Run,
    RunStatus,
    SearchHit,
    TurnStatus,
    utcnow,
)


class MemoryStore:
    def __init__(self) -> None:
        self._chats: dict[str, Chat] = {}
        self._messages: dict[str, list[Message]] = {}
        self._keys: dict[str, ApiKey] = {}
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._chat_keys: dict[tuple[str, str], tuple[str, str | None]] = {}
        self._runs: dict[str, Run] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def lead_sweeps(self) -> bool:
        return True  # nobody else can see this store

    async def create_chat(
        self, chat: Chat, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> Chat | None:
        if idempotency_key is not None and (chat.tenant_id, idempotency_key) in self._chat_keys:
            return None  # a replay, whether or not it named an id
        if chat.id in self._chats:
            raise ChatExists(chat.id)
        if idempotency_key is not None:
            self._chat_keys[(chat.tenant_id, idempotency_key)] = (chat.id, request_hash)
        self._chats[chat.id] = chat
        self._messages[chat.id] = []
        return chat

    async def chat_by_idempotency_key(
        self, tenant_id: str, idempotency_key: str
    ) -> tuple[Chat, str | None] | None:
        found = self._chat_keys.get((tenant_id, idempotency_key))
        if found is None or found[0] not in self._chats:
            return None
        return self._chats[found[0]], found[1]

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
        archived: bool | None = False,
    ) -> list[Chat]:
        found = [
            c for c in self._chats.values()
            if c.tenant_id == tenant_id
            and (archived is None or (c.archived_at is not None) == archived)
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
        version = chat.history_version + bool(TURN_FIELDS & changes.keys())
        chat = replace(chat, **changes, updated_at=utcnow(), history_version=version)
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
        self, chat_id: str, content: str, *, idempotency_key: str | None = None,
        parts: tuple[ContentPart, ...] | None = None,
    ) -> Message:
        return self._append(Message(
            chat_id=chat_id, seq=0, role=Role.USER, content=content,
            status=TurnStatus.PENDING, idempotency_key=idempotency_key, parts=parts,
        ))

    def _as_seen(self, seen: Chat) -> bool:
        """Whether the chat is exactly ``seen`` and its lease free (``begin_turn``)."""
        chat = self._chats.get(seen.id)
        held = self._leases.get(seen.id)
        return not (chat is None or chat.tenant_id != seen.tenant_id
                    or chat.message_count != seen.message_count
                    or chat.updated_at != seen.updated_at
                    or chat.history_version != seen.history_version
                    or (held is not None and held[1] > utcnow()))

    async def begin_turn(
        self, seen: Chat, owner: str, until: datetime, content: str, *,
        parts: tuple[ContentPart, ...] | None = None,
    ) -> Message | None:
        if not self._as_seen(seen):
            return None
        self._leases[seen.id] = (owner, until)
        return await self.add_user_message(seen.id, content, parts=parts)

    async def complete_turn(
        self, user: Message, answer: Message, *, lease_owner: str | None = None
    ) -> Message:
        if user.chat_id not in self._chats:
            raise ChatNotFound(user.chat_id)
        current = next((m for m in self._messages[user.chat_id] if m.seq == user.seq), None)
        if current is None or current.status is not TurnStatus.PENDING:
            raise TurnInterrupted("this turn was failed by someone else meanwhile")
        self._set_status(user, TurnStatus.OK)
        stored = self._append(answer, answer.prompt_tokens, answer.completion_tokens)
        if lease_owner is not None:
            await self.release_lease(user.chat_id, lease_owner)
        return stored

    async def begin_round(self, seen: Chat, owner: str, until: datetime) -> bool:
        if not self._as_seen(seen):
            return False
        self._leases[seen.id] = (owner, until)
        return True

    async def complete_round(
        self, chat_id: str, outputs: list[Message], answer: Message, *, lease_owner: str
    ) -> list[Message]:
        if chat_id not in self._chats:
            raise ChatNotFound(chat_id)
        held = self._leases.get(chat_id)
        if held is None or held[0] != lease_owner:
            raise TurnInterrupted("another replica took the chat over meanwhile")
        stored = [self._append(o) for o in outputs]
        stored.append(self._append(answer, answer.prompt_tokens, answer.completion_tokens))
        await self.release_lease(chat_id, lease_owner)
        return stored

    async def fail_turn(
        self, user: Message, error: str, partial: Message | None = None, *,
        lease_owner: str | None = None,
    ) -> None:
        self._set_status(user, TurnStatus.FAILED, error)
        if partial is not None and user.chat_id in self._chats:
            self._append(partial)
        if lease_owner is not None:
            await self.release_lease(user.chat_id, lease_owner)

    async def messages(
        self, chat_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Message]:
        rows = [m for m in self._messages.get(chat_id, []) if m.seq > after_seq]
        return rows if limit is None else rows[:limit]

    async def recover_pending(
        self, owners: Sequence[str] = (), *, alive: str | None = None
    ) -> int:
        return 0  # nothing survives the process, so nothing can be left pending

    async def lease_owners(self, prefix: str) -> list[str]:
        return sorted({owner for owner, _ in self._leases.values() if owner.startswith(prefix)})

    async def mark_interrupted(self, chat_id: str, seqs: list[int]) -> None:
        for message in list(self._messages.get(chat_id, [])):
            if message.seq in seqs and message.status is TurnStatus.PENDING:
                self._set_status(message, TurnStatus.FAILED, "interrupted")

    async def try_lease(
        self, chat_id: str, tenant_id: str, owner: str, until: datetime
    ) -> tuple[Chat | None, bool]:
        chat = await self.get_chat(chat_id, tenant_id)
        if chat is None:
            return None, False
        held = self._leases.get(chat_id)
        if held is not None and held[1] > utcnow():
            return chat, False
        self._leases[chat_id] = (owner, until)
        return chat, True

    async def lease_holder(self, chat_id: str) -> str | None:
        held = self._leases.get(chat_id)
        return held[0] if held is not None and held[1] >= utcnow() else None

    async def renew_lease(self, chat_id: str, owner: str, until: datetime) -> bool:
        held = self._leases.get(chat_id)
        if held is None or held[0] != owner:
            return False
        self._leases[chat_id] = (owner, until)
        return True

    async def release_lease(self, chat_id: str, owner: str) -> None:
        held = self._leases.get(chat_id)
        if held is not None and held[0] == owner:
            del self._leases[chat_id]

    async def message_by_idempotency_key(self, chat_id: str, key: str) -> Message | None:
        return next((m for m in self._messages.get(chat_id, [])
                     if m.idempotency_key == key), None)

    async def expire_idempotency_keys(self, before: datetime) -> int:
        count = 0
        for rows in self._messages.values():
            for index, message in enumerate(rows):
                if message.idempotency_key is not None and message.created_at < before:
                    rows[index] = replace(message, idempotency_key=None)
                    count += 1
        for key, (chat_id, _) in list(self._chat_keys.items()):
            chat = self._chats.get(chat_id)
            if chat is None or chat.created_at < before:
                del self._chat_keys[key]
        return count

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

    # history edits outside turns (conversation items, branches) -----------------------

    async def append_messages(self, chat_id: str, rows: list[Message], *,
                              lease_owner: str | None = None) -> list[Message]:
        if chat_id not in self._chats:
            raise ChatNotFound(chat_id)
        stored = [self._append(replace(row, chat_id=chat_id), row.prompt_tokens,
                               row.completion_tokens) for row in rows]
        if lease_owner is not None:
            await self.release_lease(chat_id, lease_owner)
        return stored

    async def delete_message(self, chat_id: str, seq: int) -> bool:
        rows = self._messages.get(chat_id, [])
        kept = [m for m in rows if m.seq != seq]
        if len(kept) == len(rows):
            return False
        self._messages[chat_id] = kept
        chat = self._chats[chat_id]
        self._chats[chat_id] = replace(chat, updated_at=utcnow(),
                                       history_version=chat.history_version + 1)
        return True

    async def replace_answer(
        self, old: Message, answer: Message, *, lease_owner: str | None = None
    ) -> Message:
        current = next((m for m in self._messages.get(old.chat_id, []) if m.seq == old.seq),
                       None)
        if (current is None or current.role is not Role.ASSISTANT
                or current.status is not TurnStatus.OK):
            raise ChatMoved(old.chat_id)
        self._set_status(old, TurnStatus.REPLACED)
        stored = self._append(answer, answer.prompt_tokens, answer.completion_tokens)
        if lease_owner is not None:
            await self.release_lease(old.chat_id, lease_owner)
        return stored

    async def fork_chat(self, chat: Chat, up_to_seq: int) -> Chat:
        if chat.id in self._chats:
            raise ChatExists(chat.id)
        copied = [replace(m, chat_id=chat.id, idempotency_key=None)
                  for m in self._messages.get(chat.parent_id or "", [])
                  if m.seq <= up_to_seq and m.status is TurnStatus.OK]
        forked = replace(chat, forked_at_seq=up_to_seq, message_count=up_to_seq,
                         prompt_tokens=sum(m.prompt_tokens for m in copied),
                         completion_tokens=sum(m.completion_tokens for m in copied))
        self._chats[chat.id] = forked
        self._messages[chat.id] = copied
        return forked

    # usage, search, retention -----------------------------------------------------------

    async def usage(
        self, tenant_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[ModelUsage]:
        totals: dict[str, list[int]] = {}
        for chat in self._chats.values():
            if chat.tenant_id != tenant_id:
                continue
            for m in self._messages[chat.id]:
                paid = m.status in (TurnStatus.OK, TurnStatus.REPLACED)
                summary = m.role is Role.SYSTEM and m.covers_seq is not None
                if ((m.role is not Role.ASSISTANT and not summary) or not paid
                        or (chat.forked_at_seq is not None and m.seq <= chat.forked_at_seq)
                        or (start is not None and m.created_at < start)
                        or (end is not None and m.created_at >= end)):
                    continue
                total = totals.setdefault(m.model or chat.model, [0, 0, 0, 0])
                total[3 if summary else 0] += 1
                total[1] += m.prompt_tokens
                total[2] += m.completion_tokens
        return [ModelUsage(model, turns, prompt, completion, summaries=summaries)
                for model, (turns, prompt, completion, summaries) in sorted(totals.items())]

    async def search(self, tenant_id: str, query: str, limit: int = 20) -> list[SearchHit]:
        wanted = set(words(query))
        if not wanted:
            return []
        hits = [
            SearchHit(m.chat_id, m.seq, m.role, snippet(m.content, query), m.created_at)
            for chat in self._chats.values() if chat.tenant_id == tenant_id
            for m in self._messages[chat.id] if wanted <= set(words(m.content))
        ]
        hits.sort(key=lambda hit: hit.created_at, reverse=True)
        return hits[:limit]

    async def delete_expired(self, now: datetime) -> list[str]:
        ids = [
            c.id for c in self._chats.values()
            if c.expires_at is not None and c.expires_at <= now
            and (c.id not in self._leases or self._leases[c.id][1] < now)
        ]
        for chat_id in ids:
            del self._chats[chat_id]
            del self._messages[chat_id]
            self._leases.pop(chat_id, None)
        return ids

    # titles, import -----------------------------------------------------------------------

    async def set_title_if_unset(self, chat_id: str, tenant_id: str, title: str) -> bool:
        chat = await self.get_chat(chat_id, tenant_id)
        if chat is None or chat.title is not None:
            return False
        self._chats[chat_id] = replace(chat, title=title, updated_at=utcnow())
        return True

    async def import_chat(self, chat: Chat, rows: list[Message]) -> Chat:
        if chat.id in self._chats:
            raise ChatExists(chat.id)
        self._chats[chat.id] = chat
        self._messages[chat.id] = [replace(m, chat_id=chat.id) for m in rows]
        return chat

    # runs -------------------------------------------------------------------------------

    async def create_run(self, run: Run) -> None:
        self._runs[run.id] = run

    async def get_run(self, run_id: str, tenant_id: str) -> Run | None:
        run = self._runs.get(run_id)
        return run if run is not None and run.tenant_id == tenant_id else None

    def _unfinished(self, run_id: str, owner: str | None = None) -> Run | None:
        run = self._runs.get(run_id)
        if run is None or run.status.finished or (owner is not None and run.owner != owner):
            return None
        return run

    async def update_run(self, run_id: str, owner: str, status: RunStatus, *,
                         seq: int | None = None, error: str | None = None) -> bool:
        run = self._unfinished(run_id, owner)
        if run is None:
            return False
        self._runs[run_id] = replace(run, status=status, seq=run.seq if seq is None else seq,
                                     error=run.error if error is None else error,
                                     updated_at=utcnow())
        return True

    async def renew_run(self, run_id: str, owner: str, until: datetime) -> bool | None:
        run = self._unfinished(run_id, owner)
        if run is None:
            return None
        self._runs[run_id] = replace(run, expires_at=until)
        return run.cancel_requested

    async def cancel_run(self, run_id: str, tenant_id: str) -> Run | None:
        run = await self.get_run(run_id, tenant_id)
        if run is not None and not run.status.finished:
            run = self._runs[run_id] = replace(run, cancel_requested=True, updated_at=utcnow())
        return run

    async def fail_abandoned_runs(self, now: datetime, owners: Sequence[str] = (),
                                  run_id: str | None = None) -> int:
        failed = 0
        for run in list(self._runs.values()):
            if run.status.finished or (run_id is not None and run.id != run_id):
                continue
            if (run.expires_at is not None and run.expires_at < now) or run.owner in owners:
                self._runs[run.id] = replace(run, status=RunStatus.FAILED, updated_at=now,
                                             error="interrupted: the process running this "
                                                   "response stopped")
                failed += 1
        return failed
