"""The storage protocol the turn algorithm is written against.

A turn touches storage a constant number of times whatever the chat's length: append the
user message (pending), then either complete the turn (answer + counters, one
transaction) or fail it. Nothing rewrites history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from chatsessions.types import (
    ApiKey,
    Chat,
    ContentPart,
    Message,
    ModelUsage,
    Run,
    RunStatus,
    SearchHit,
)


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    async def lead_sweeps(self) -> bool:
        """Whether this process is the one, of all sharing the database, to run periodic
        sweeps: it holds the role (taking it if free) until it exits or loses its
        connection."""

    async def create_chat(
        self, chat: Chat, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> Chat | None:
        """Insert ``chat``; None if the tenant already used ``idempotency_key``,
        :class:`ChatExists` if another chat (of any tenant) has its id."""

    async def chat_by_idempotency_key(
        self, tenant_id: str, idempotency_key: str
    ) -> tuple[Chat, str | None] | None:
        """The chat created with this key, and the hash of the request that created it."""

    async def get_chat(self, chat_id: str, tenant_id: str) -> Chat | None: ...

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
        """Newest first; ``before`` is the (created_at, id) of the last chat already seen.
        ``archived``: False only active chats, True only archived ones, None both."""

    async def update_chat(
        self, chat_id: str, tenant_id: str, changes: dict[str, Any]
    ) -> Chat | None:
        """Set the given fields of ``Chat`` (``tools`` as a tuple of ``Tool``); bump the
        history version if one of them is in ``rows.TURN_FIELDS``."""

    async def delete_chat(self, chat_id: str, tenant_id: str) -> bool:
        """Really delete the chat and all its messages."""

    async def add_user_message(
        self, chat_id: str, content: str, *, idempotency_key: str | None = None,
        parts: tuple[ContentPart, ...] | None = None,
    ) -> Message:
        """Append a pending user message, allocating the next seq atomically. ``parts``:
        its content as parts when it holds images (``content`` is then their text)."""

    async def begin_turn(
        self, seen: Chat, owner: str, until: datetime, content: str, *,
        parts: tuple[ContentPart, ...] | None = None,
    ) -> Message | None:
        """Take the turn lease and append the pending user message in one transaction,
        only if the chat is still exactly ``seen`` (message count, last update and history
        version) and its lease is free; else change nothing and return None."""

    async def complete_turn(
        self, user: Message, answer: Message, *, lease_owner: str | None = None
    ) -> Message:
        """Mark ``user`` ok, append ``answer``, bump the chat's counters and release the
        turn lease, atomically."""

    async def begin_round(self, seen: Chat, owner: str, until: datetime) -> bool:
        """Take the turn lease for a tool round, only if the chat is still exactly
        ``seen`` (as :meth:`begin_turn` judges it) and its lease is free; nothing else is
        written (a round's outputs wait for its answer). False: nothing taken."""

    async def complete_round(
        self, chat_id: str, outputs: list[Message], answer: Message, *, lease_owner: str
    ) -> list[Message]:
        """Append a tool round's ``outputs`` and ``answer``, bump the chat's and the usage
        counters and release the turn lease, atomically; only while ``lease_owner`` holds
        the lease (else ``TurnInterrupted``, nothing written: another replica took the
        chat over, and may have stored these outputs itself)."""

    async def fail_turn(
        self, user: Message, error: str, partial: Message | None = None, *,
        lease_owner: str | None = None,
    ) -> None:
        """Mark ``user`` failed and keep a partial streamed answer as a failed message,
        unless ``user`` is no longer pending (its answer was stored after all)."""

    async def messages(
        self, chat_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[Message]:
        """Messages with seq > after_seq, in order."""

    async def recover_pending(
        self, owners: Sequence[str] = (), *, alive: str | None = None
    ) -> int:
        """Fail turns left pending by a crash (in chats no live process holds); return how
        many. ``owners`` are lease owners known to be dead: their leases are released."""

    async def lease_owners(self, prefix: str) -> list[str]:
        """Owners of current leases whose name starts with ``prefix``."""

    async def mark_interrupted(self, chat_id: str, seqs: list[int]) -> None:
        """Fail these pending messages: seen under our lease, nobody is finishing them."""

    async def try_lease(
        self, chat_id: str, tenant_id: str, owner: str, until: datetime
    ) -> tuple[Chat | None, bool]:
        """Take the chat's turn lease: (chat, acquired); (None, False) if no such chat."""

    async def lease_holder(self, chat_id: str) -> str | None:
        """The owner of the chat's current (unexpired) turn lease, if any."""

    async def renew_lease(self, chat_id: str, owner: str, until: datetime) -> bool: ...

    async def release_lease(self, chat_id: str, owner: str) -> None: ...

    async def message_by_idempotency_key(self, chat_id: str, key: str) -> Message | None: ...

    async def expire_idempotency_keys(self, before: datetime) -> int:
        """Forget idempotency keys older than ``before``."""

    async def add_api_key(self, key: ApiKey) -> None: ...

    async def list_api_keys(self) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str) -> bool: ...

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The active (not revoked) key with this hash."""

    async def has_api_keys(self) -> bool:
        """Whether any active key exists: if none, the service runs in single-user mode."""

    # history edits outside turns (conversation items, branches) -----------------------

    async def append_messages(self, chat_id: str, rows: list[Message], *,
                              lease_owner: str | None = None) -> list[Message]:
        """Append finished messages as they are, allocating their seqs, in one transaction
        (a tool round's outputs and answer); with ``lease_owner``, the same transaction
        releases the turn lease, as a turn's last write does."""

    async def delete_message(self, chat_id: str, seq: int) -> bool:
        """Really delete one message (its seq is never reused) and bump the chat's history
        version."""

    async def replace_answer(
        self, old: Message, answer: Message, *, lease_owner: str | None = None
    ) -> Message:
        """Mark the ok answer ``old`` replaced and append ``answer`` (its ``replaces_seq``
        set), bump the chat's counters and release the turn lease, atomically; raise
        ``ChatMoved`` (storing nothing) if ``old`` is no longer an ok answer."""

    async def fork_chat(self, chat: Chat, up_to_seq: int) -> Chat:
        """Create ``chat`` (``parent_id`` names the source) holding a copy of the source's ok
        messages with seq <= ``up_to_seq``, seqs unchanged; its next seq is up_to_seq + 1."""

    # usage, search, retention -----------------------------------------------------------

    async def usage(
        self, tenant_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[ModelUsage]:
        """Answered turns and their tokens per model, for answers created in [start, end),
        in one aggregate query. Messages a fork copied are counted once, in the source.
        Costs are left at 0: prices are the caller's business."""

    async def search(self, tenant_id: str, query: str, limit: int = 20) -> list[SearchHit]:
        """Messages of the tenant's chats containing every word of ``query``, best first."""

    async def delete_expired(self, now: datetime) -> list[str]:
        """Really delete chats (all tenants) whose ``expires_at`` has passed, with their
        messages; chats in the middle of a turn wait for the next sweep. Returns their ids."""

    # titles, import ---------------------------------------------------------------------

    async def set_title_if_unset(self, chat_id: str, tenant_id: str, title: str) -> bool:
        """Set the title only while the chat has none, in one conditional update, so an
        automatic title never overwrites one the user set meanwhile. Whether it was set."""

    async def import_chat(self, chat: Chat, rows: list[Message]) -> Chat:
        """Insert ``chat`` and its messages exactly as given (seqs, statuses, timestamps,
        counters), in one transaction; :class:`ChatExists` if the id is taken."""


    # runs: turns run in the background -------------------------------------------------

    async def create_run(self, run: Run) -> None: ...

    async def get_run(self, run_id: str, tenant_id: str) -> Run | None: ...

    async def update_run(self, run_id: str, owner: str, status: RunStatus, *,
                         seq: int | None = None, error: str | None = None) -> bool:
        """Move an unfinished run of ``owner`` on; False if it is finished or not its."""

    async def renew_run(self, run_id: str, owner: str, until: datetime) -> bool | None:
        """Extend an unfinished run's expiry and say whether a cancel was asked for (None:
        the run is finished or not ``owner``'s any more)."""

    async def cancel_run(self, run_id: str, tenant_id: str) -> Run | None:
        """Ask an unfinished run to stop (its owner sees it when it next renews)."""

    async def fail_abandoned_runs(self, now: datetime, owners: Sequence[str] = (),
                                  run_id: str | None = None) -> int:
        """Fail unfinished runs expired by ``now`` or owned by dead ``owners`` (only
        ``run_id`` if given); return how many."""


def open_store(url: str, **options: Any) -> Store:
    """Pick the store for a database URL (not yet opened)."""
    if url in ("memory://", ":memory:", "memory"):
        from chatsessions.store.memory import MemoryStore

        return MemoryStore()
    from chatsessions.store.sql import SQLStore

    return SQLStore(url, **options)
