"""A chat's messages outside turns: reading them, adding or deleting some, forking, export
and import, search and usage."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from chatsessions._sessions.chats import ChatMethods
from chatsessions.engine.export import export_json, export_markdown
from chatsessions.engine.importing import build_chat
from chatsessions.engine.tools import check_chat_message
from chatsessions.errors import InvalidInput
from chatsessions.types import (
    Message,
    Role,
    SearchHit,
    ToolCall,
    TurnStatus,
    UsageReport,
    utcnow,
)
from chatsessions.validation import check_text, check_when


class HistoryMethods(ChatMethods):
    async def history(
        self, chat_id: str, *, include_failed: bool = False, include_replaced: bool = False
    ) -> list[Message]:
        """The conversation, starting with the system prompt (seq 0): the ok messages the
        model sees. ``include_replaced`` adds answers superseded by :meth:`regenerate`;
        ``include_failed`` gives every stored message (failed turns and replaced answers
        too), as exports want."""
        chat = await self.get_chat(chat_id)
        rows = await self._runtime.store.messages(chat_id)
        system = Message(chat_id, 0, Role.SYSTEM, chat.system_prompt, created_at=chat.created_at)
        wanted = {TurnStatus.OK, *([TurnStatus.REPLACED] if include_replaced else [])}
        kept = [m for m in rows if include_failed or m.status in wanted]
        return [system, *kept]

    async def messages(
        self, chat_id: str, *, after_seq: int = 0, limit: int | None = 100
    ) -> list[Message]:
        """One page of the stored messages, whatever their status: those with seq above
        ``after_seq``, in order, at most ``limit`` (None: all). The next page starts after
        the last seq returned. The system prompt is the chat's field, not a message here."""
        if after_seq < 0:
            raise InvalidInput("after_seq must be 0 or more")
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be at least 1")
        await self.get_chat(chat_id)
        return await self._runtime.store.messages(chat_id, after_seq=after_seq, limit=limit)

    async def get_message(self, chat_id: str, seq: int) -> Message | None:
        """The stored message ``seq`` (1 and up) of the chat, whatever its status; None if
        there is none (never was, or deleted)."""
        if seq < 1:
            await self.get_chat(chat_id)
            return None
        found = await self.messages(chat_id, after_seq=seq - 1, limit=1)
        return found[0] if found and found[0].seq == seq else None

    async def append_messages(
        self, chat_id: str, messages: Sequence[tuple[Role, str] | Mapping[str, Any]]
    ) -> list[Message]:
        """Add messages to the history as they are, without asking the model (imported
        history, a conversation's items): ``(role, text)`` pairs of user and assistant
        messages, or dicts in OpenAI's chat shape, which may also be an answer's
        ``tool_calls`` or a ``role: tool`` output with its ``tool_call_id``. Taken in turn
        with the chat's turns."""
        limit = self.settings.max_message_chars
        rows = [_appended(chat_id, item, limit) for item in messages]
        await self._ready()
        async with self._runtime.leases.hold(chat_id, self.tenant_id,
                                          self.settings.busy_timeout) as lease:
            return await self._runtime.store.append_messages(lease.chat.id, rows)

    async def delete_message(self, chat_id: str, seq: int) -> bool:
        """Delete one message for real (its seq is not reused); False if there is none."""
        await self._ready()
        async with self._runtime.leases.hold(chat_id, self.tenant_id, self.settings.busy_timeout):
            deleted = await self._runtime.store.delete_message(chat_id, seq)
            self._runtime.cache.discard(chat_id)
        return deleted

    async def fork_chat(self, chat_id: str, *, up_to_seq: int | None = None) -> str:
        """A new chat (``parent_id`` = this one) with the same settings and a copy of the
        ok messages up to ``up_to_seq`` (default: all of them); returns its id."""
        source = await self.get_chat(chat_id)
        if up_to_seq is None:
            up_to_seq = source.message_count
        if not 0 <= up_to_seq <= source.message_count:
            raise InvalidInput(f"up_to_seq must be within 0..{source.message_count}")
        chat = replace(source, id=str(uuid.uuid4()), parent_id=source.id, created_at=utcnow(),
                       updated_at=utcnow(), archived_at=None, expires_at=None)
        await self._runtime.store.fork_chat(chat, up_to_seq)
        return chat.id

    async def export_chat(self, chat_id: str) -> dict[str, Any]:
        """The chat as a lossless JSON-ready document (every stored message, whatever its
        status) that :meth:`import_chat` takes back."""
        chat = await self.get_chat(chat_id)
        return export_json(chat, await self._runtime.store.messages(chat_id))

    async def import_chat(self, data: Any, *, keep_id: bool = False) -> str:
        """Store a chat from an export (:meth:`export_chat`, seqs, statuses, times and
        counters kept) or from an OpenAI-style ``[{"role", "content"}]`` list (a leading
        system message becomes the system prompt); return its id. The chat gets a new id
        unless ``keep_id`` and the export's id is free (else :class:`ChatExists`). Malformed
        data raises :class:`InvalidInput` and stores nothing."""
        store = await self._ready()
        chat, rows = build_chat(
            data, tenant_id=self.tenant_id, settings=self.settings,
            default_backend=self._runtime.models.default_backend,
            default_model=lambda name: self._runtime.models.backend(name).default_model,
            keep_id=keep_id)
        await store.import_chat(chat, rows)
        return chat.id

    async def export_markdown(self, chat_id: str) -> str:
        """The chat as Markdown for reading (every stored message, failed turns and earlier
        answers marked); :meth:`export_chat` is the lossless form."""
        chat = await self.get_chat(chat_id)
        return export_markdown(chat, await self.history(chat_id, include_failed=True))

    async def usage(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> UsageReport:
        """This tenant's answered turns, tokens and cost per model, for answers (and
        summaries) written in ``[start, end)``. Costs come from ``Settings.prices``; models
        without a price cost 0 and are listed in the report's ``unpriced``."""
        start = check_when(start, field="start")
        end = check_when(end, field="end")
        if start is not None and end is not None and end < start:
            raise InvalidInput("the end of the range is before its start")
        store = await self._ready()
        prices = self.settings.prices
        models = []
        for used in await store.usage(self.tenant_id, start, end):
            price = prices.get(used.model)
            if price is None:
                models.append(used)
                continue
            cost = (used.prompt_tokens * price[0] + used.completion_tokens * price[1]) / 1e6
            models.append(replace(used, cost=cost, priced=True))
        return UsageReport(start=start, end=end, models=models)

    async def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Messages of this tenant's chats that contain every word of ``query``, best
        match first, each with a snippet (matched words in [brackets])."""
        query = check_text(query, field="query", max_chars=1000)
        if not 1 <= limit <= 200:
            raise InvalidInput("limit must be within 1..200")
        store = await self._ready()
        return await store.search(self.tenant_id, query, limit)


def _added_role(role: Role | str) -> Role:
    if role not in (Role.USER, Role.ASSISTANT):
        raise InvalidInput(f"only user and assistant messages can be added, not {role}")
    return Role(role)


def _appended(chat_id: str, item: tuple[Role, str] | Mapping[str, Any],
              max_chars: int) -> Message:
    """One message for :meth:`AsyncChatSessions.append_messages`, checked."""
    if not isinstance(item, Mapping):
        role, content = item
        return Message(chat_id, 0, _added_role(role),
                       check_text(content, field="message", max_chars=max_chars))
    if item.get("role") not in ("user", "assistant", "tool"):
        raise InvalidInput(f"only user, assistant and tool messages can be added, not "
                           f"{item.get('role')}")
    shown = check_chat_message(item, max_chars)
    calls = shown.get("tool_calls")
    if not calls and shown["role"] != "tool" and not shown["content"].strip():
        raise InvalidInput("message must not be empty")
    return Message(chat_id, 0, Role(shown["role"]), shown["content"] or "",
                   tool_calls=tuple(ToolCall.from_openai(c) for c in calls) if calls else None,
                   tool_call_id=shown.get("tool_call_id"))
