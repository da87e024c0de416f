"""One turn at a time per chat across instances (replicas) sharing a database."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from chatsessions import (
    AsyncChatSessions,
    BackendError,
    ChatBusy,
    ChatNotFound,
    InvalidInput,
    Role,
    TurnStatus,
)
from chatsessions.engine.leases import poll_pauses
from chatsessions.store.schema import chats
from chatsessions.testing import FakeLLMServer
from chatsessions.types import utcnow


async def test_two_replicas_alternate_on_one_chat(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    fake_llm.delay = 0.005
    async with (
        AsyncChatSessions(**settings_kwargs, replica_id="a") as a,  # type: ignore[arg-type]
        AsyncChatSessions(**settings_kwargs, replica_id="b") as b,  # type: ignore[arg-type]
    ):
        chat_id = await a.create_chat()
        texts = [f"m{n}" for n in range(16)]
        await asyncio.gather(*(
            (a if n % 2 else b).send_message(chat_id, text) for n, text in enumerate(texts)))
        history = await a.history(chat_id)
        assert [m.role for m in history[1:]] == [Role.USER, Role.ASSISTANT] * 16
        assert sorted(m.content for m in history[1::2]) == sorted(texts)
        for index in range(2, len(history), 2):
            seen = [m.as_openai() for m in history[:index]]
            assert history[index].content == FakeLLMServer.answer_for(seen)


async def test_a_turn_presuming_the_chat_unchanged_sees_another_replicas_changes(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    """A's second turn starts from the chat as A left it; B changed it meanwhile (a new
    system prompt, a turn of its own), so A must notice and send what is stored now."""
    async with (
        AsyncChatSessions(**settings_kwargs, replica_id="a", busy_timeout=0.5) as a,  # type: ignore[arg-type]
        AsyncChatSessions(**settings_kwargs, replica_id="b") as b,  # type: ignore[arg-type]
    ):
        chat_id = await a.create_chat("Be brief.")
        await a.send_message(chat_id, "first, from a")
        assert a._runtime.presumed_chat(chat_id) is not None
        await b.update_chat(chat_id, system_prompt="Answer in French.")
        await a.send_message(chat_id, "second, from a")
        assert fake_llm.requests[-1].messages[0] == {
            "role": "system", "content": "Answer in French."}
        await b.send_message(chat_id, "third, from b")
        await a.send_message(chat_id, "fourth, from a")
        seen = fake_llm.requests[-1].messages
        assert [m["content"] for m in seen if m["role"] == "user"] == [
            "first, from a", "second, from a", "third, from b", "fourth, from a"]
        # a lease another replica holds is respected, presumed or not
        await a.send_message(chat_id, "fifth, from a")
        await b._runtime.store.try_lease(chat_id, "default", "b-elsewhere",
                                utcnow() + timedelta(seconds=30))
        with pytest.raises(ChatBusy):
            await a.send(chat_id, "sixth, from a", params={"max_tokens": 5})
        history = await a.history(chat_id, include_failed=True)
        assert history[-1].content != "sixth, from a"


async def test_a_dead_replicas_lease_expires_and_its_turn_is_failed(
    settings_kwargs: dict[str, object],
) -> None:
    async with AsyncChatSessions(**settings_kwargs, busy_timeout=5) as alive:  # type: ignore[arg-type]
        chat_id = await alive.create_chat()
        store = alive._runtime.store
        # A replica took the lease, stored the user message, then died.
        chat, acquired = await store.try_lease(chat_id, "default", "dead",
                                               utcnow() + timedelta(seconds=0.5))
        assert acquired
        assert chat is not None
        await store.add_user_message(chat_id, "lost in the crash")
        answer = await alive.send_message(chat_id, "anyone?")  # waits for the expiry
        assert answer
        rows = await alive.history(chat_id, include_failed=True)
        assert [(m.content, m.status) for m in rows[1:3]] == [
            ("lost in the crash", TurnStatus.FAILED), ("anyone?", TurnStatus.OK)]
        assert "interrupted" in (rows[1].error or "")


async def test_busy_beyond_the_wait_is_chat_busy(settings_kwargs: dict[str, object]) -> None:
    async with AsyncChatSessions(**settings_kwargs, busy_timeout=0.3) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        await chats._runtime.store.try_lease(chat_id, "default", "other",
                                             utcnow() + timedelta(seconds=30))
        with pytest.raises(ChatBusy) as info:
            await chats.send_message(chat_id, "hello?")
        assert info.value.retry_after == 1.0
        assert info.value.chat_id == chat_id
        assert chat_id in str(info.value)
        assert (await chats.get_chat(chat_id)).message_count == 0
        with pytest.raises(ChatNotFound, match="no-such-chat"):
            await chats.send_message("no-such-chat", "hello?")


async def test_a_lease_freed_within_the_last_second_of_the_wait_is_taken(
    settings_kwargs: dict[str, object],
) -> None:
    """The turn polls until its deadline, however little of it is left: the other
    replica's lease is released right after the first refused poll."""
    async with AsyncChatSessions(**settings_kwargs, busy_timeout=1.0) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        store = chats._runtime.store
        await store.try_lease(chat_id, "default", "other", utcnow() + timedelta(seconds=30))
        try_lease = store.try_lease
        refused: list[bool] = []

        async def release_after_first_refusal(*args: Any, **kwargs: Any) -> Any:
            chat, acquired = await try_lease(*args, **kwargs)
            if not acquired and not refused:
                refused.append(True)
                await store.release_lease(chat_id, "other")
            return chat, acquired

        store.try_lease = release_after_first_refusal  # type: ignore[method-assign]
        assert await chats.send_message(chat_id, "hello?")
        assert refused == [True]


async def test_restart_with_the_same_replica_id_takes_its_chats_back(
    settings_kwargs: dict[str, object],
) -> None:
    """Leases of this replica's dead processes are taken back at start; a live sibling
    process (another worker with the same replica id) keeps its own."""
    import os

    far = utcnow() + timedelta(hours=1)
    async with AsyncChatSessions(**settings_kwargs, replica_id="r1") as first:  # type: ignore[arg-type]
        mine, dead, sibling = [await first.create_chat() for _ in range(3)]
        for chat_id, owner in ((mine, first._runtime.owner), (dead, "r1/999999999"),
                               (sibling, f"r1/{os.getppid()}")):
            await first._runtime.store.try_lease(chat_id, "default", owner, far)
            await first._runtime.store.add_user_message(chat_id, "in flight at the crash")
    async with AsyncChatSessions(**settings_kwargs, replica_id="r1",  # type: ignore[arg-type]
                                 busy_timeout=0.5) as again:
        for chat_id in (mine, dead):
            rows = await again.history(chat_id, include_failed=True)
            assert rows[1].status is TurnStatus.FAILED
            assert await again.send_message(chat_id, "carry on")
        rows = await again.history(chat_id=sibling, include_failed=True)
        assert rows[1].status is TurnStatus.PENDING  # its live process may still finish it
        with pytest.raises(ChatBusy):
            await again.send_message(sibling, "wait your turn")


async def test_idempotent_send_runs_once(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    fake_llm.delay = 0.05
    chat_id = await sessions.create_chat()
    first, second = await asyncio.gather(
        sessions.send(chat_id, "pay my invoice", idempotency_key="k1"),
        sessions.send(chat_id, "pay my invoice", idempotency_key="k1"),
    )
    assert first == second
    assert len(fake_llm.requests) == 1
    assert (await sessions.get_chat(chat_id)).message_count == 2
    again = await sessions.send(chat_id, "pay my invoice", idempotency_key="k1")
    assert again == first
    with pytest.raises(InvalidInput, match="different message"):
        await sessions.send(chat_id, "pay someone else", idempotency_key="k1")
    streamed = [item async for item in sessions.stream(chat_id, "pay my invoice",
                                                       idempotency_key="k1")]
    assert streamed == [first.content, first]


async def test_idempotent_failure_is_replayed_not_rerun(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    from chatsessions.testing import Fault

    chat_id = await sessions.create_chat()
    fake_llm.inject(Fault.status(500))
    with pytest.raises(BackendError):
        await sessions.send(chat_id, "try once", idempotency_key="k2")
    with pytest.raises(BackendError, match="already failed"):
        await sessions.send(chat_id, "try once", idempotency_key="k2")
    assert len(fake_llm.requests) == 1


async def test_idempotent_chat_creation(sessions: AsyncChatSessions) -> None:
    ids = await asyncio.gather(*(
        sessions.create_chat(title="same", idempotency_key="c1") for _ in range(5)))
    assert len(set(ids)) == 1
    assert len(await sessions.list_chats()) == 1
    with pytest.raises(InvalidInput, match="different chat"):
        await sessions.create_chat(title="other", idempotency_key="c1")
    other_tenant = sessions.for_tenant("t2")
    assert await other_tenant.create_chat(title="same", idempotency_key="c1") != ids[0]


async def test_expired_idempotency_keys_are_forgotten(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    await sessions.send(chat_id, "once", idempotency_key="old")
    store = sessions._runtime.store
    assert await store.expire_idempotency_keys(utcnow() + timedelta(seconds=1)) == 1
    await sessions.send(chat_id, "once", idempotency_key="old")
    assert len(fake_llm.requests) == 2


async def test_total_deadline(settings_kwargs: dict[str, object], fake_llm: FakeLLMServer) -> None:
    from chatsessions import BackendTimeout

    fake_llm.delay = 1.0
    async with AsyncChatSessions(**settings_kwargs, turn_deadline=0.3) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat()
        with pytest.raises(BackendTimeout, match="deadline"):
            await chats.send_message(chat_id, "slow?")
        with pytest.raises(BackendTimeout):
            async for _ in chats.stream_message(chat_id, "slow stream?"):
                pass
        rows = await chats.history(chat_id, include_failed=True)
        assert [m.status for m in rows[1:]] == [TurnStatus.FAILED, TurnStatus.FAILED]


async def test_sweep_spares_this_process_overdue_leases(
    settings_kwargs: dict[str, object],
) -> None:
    """A process so busy that it renews its leases late has not died: its own sweep must
    not fail its turns (another replica's overdue lease is fair game)."""
    overdue = utcnow() - timedelta(seconds=1)
    async with AsyncChatSessions(**settings_kwargs) as chats:  # type: ignore[arg-type]
        mine, theirs = await chats.create_chat(), await chats.create_chat()
        for chat_id, owner in ((mine, chats._runtime.owner), (theirs, "gone/1")):
            await chats._runtime.store.try_lease(chat_id, "default", owner, overdue)
            await chats._runtime.store.add_user_message(chat_id, "in flight")
        assert await chats.sweep() == 1
        assert (await chats.history(mine, include_failed=True))[1].status is TurnStatus.PENDING
        assert (await chats.history(theirs, include_failed=True))[1].status is TurnStatus.FAILED


async def test_a_turn_longer_than_its_lease_keeps_renewing_it(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    fake_llm.delay = 1.4
    async with (
        AsyncChatSessions(**settings_kwargs, replica_id="a", lease_ttl=0.6) as a,  # type: ignore[arg-type]
        AsyncChatSessions(**settings_kwargs, replica_id="b") as b,  # type: ignore[arg-type]
    ):
        chat_id = await a.create_chat()
        turn = asyncio.ensure_future(a.send_message(chat_id, "a slow question"))
        for _ in range(3):  # twice the lease's own 0.6 s
            await asyncio.sleep(0.4)
            _chat, acquired = await b._runtime.store.try_lease(
                chat_id, "default", "b-elsewhere", utcnow() + timedelta(seconds=30))
            assert not acquired
        assert await turn
        statuses = [m.status for m in await b.history(chat_id, include_failed=True)]
        assert statuses[1:] == [TurnStatus.OK, TurnStatus.OK]


async def test_a_presumed_turn_takes_its_lease_with_its_first_write_and_renews_it(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    """A's second turn presumes the chat as its first left it: the question's write takes
    the lease (no separate lease write), held by A in the database and renewed for as long
    as the model takes, so another replica stays out and a dead A's lease would expire."""
    settings = {**settings_kwargs, "request_timeout": 30.0}
    async with (
        AsyncChatSessions(**settings, replica_id="a", lease_ttl=1.0) as a,  # type: ignore[arg-type]
        AsyncChatSessions(**settings, replica_id="b") as b,  # type: ignore[arg-type]
    ):
        chat_id = await a.create_chat()
        query = sa.select(chats.c.lease_owner, chats.c.lease_expires_at).where(
            chats.c.id == chat_id)
        fake_llm.delay = 1.0
        first = asyncio.ensure_future(a.send_message(chat_id, "the first, not presumed"))
        await asyncio.sleep(0.5)
        assert not first.done()
        owner, until = await b._runtime.store.db.read(lambda conn: conn.execute(query).one())
        assert owner is not None
        assert owner.startswith("a")
        assert until is not None
        assert _aware(until) > utcnow()
        assert await first
        assert a._runtime.presumed_chat(chat_id) is not None
        store = a._runtime.store
        lease_writes: list[str] = []
        try_lease = store.try_lease

        async def counted(*args: Any, **kwargs: Any) -> Any:
            lease_writes.append(args[0])
            return await try_lease(*args, **kwargs)

        store.try_lease = counted  # type: ignore[method-assign]
        fake_llm.delay = 4.0
        started = asyncio.get_running_loop().time()
        turn = asyncio.ensure_future(a.send_message(chat_id, "a slow one"))
        while asyncio.get_running_loop().time() - started < 2.5:  # 2.5 lease periods
            await asyncio.sleep(0.5)
            assert not turn.done()
            owner, until = await b._runtime.store.db.read(
                lambda conn: conn.execute(query).one())
            assert owner is not None
            assert owner.startswith("a")
            assert until is not None
            assert _aware(until) > utcnow()  # renewed once the first period is over
            _chat, acquired = await b._runtime.store.try_lease(
                chat_id, "default", "b-elsewhere", utcnow() + timedelta(seconds=30))
            assert not acquired
        assert await turn
        assert lease_writes == []
        owner, _until = await b._runtime.store.db.read(lambda conn: conn.execute(query).one())
        assert owner is None  # released by the answer's write


async def test_a_turns_lease_expires_one_lease_period_after_it_was_written(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    """Whether a turn takes the lease the slow way (the chat another replica wrote last)
    or with its question's write (the chat as this process left it), the lease it writes
    expires one lease period later, so a replica that dies mid-turn blocks the chat for at
    most that long. Looked at long before the first renewal (a third of a lease later)."""
    ttl = 30.0
    async with (
        AsyncChatSessions(**settings_kwargs, replica_id="a", lease_ttl=ttl) as a,  # type: ignore[arg-type]
        AsyncChatSessions(**settings_kwargs, replica_id="b") as b,  # type: ignore[arg-type]
    ):
        chat_id = await b.create_chat()
        query = sa.select(chats.c.lease_owner, chats.c.lease_expires_at).where(
            chats.c.id == chat_id)
        fake_llm.delay = 0.6
        for presumed in (False, True):
            assert (a._runtime.presumed_chat(chat_id) is not None) is presumed
            before = utcnow()
            turn = asyncio.ensure_future(a.send_message(chat_id, f"presumed: {presumed}"))
            await asyncio.sleep(0.3)
            assert not turn.done()
            owner, until = await b._runtime.store.db.read(
                lambda conn: conn.execute(query).one())
            assert owner is not None
            assert owner.startswith("a")
            assert until is not None
            ceiling = utcnow() + timedelta(seconds=ttl)
            assert before + timedelta(seconds=ttl - 1) <= _aware(until) <= ceiling
            assert await turn


class _Bound:
    """A random source that always draws the lower (or upper) end of the range."""

    def __init__(self, upper: bool) -> None:
        self.upper = upper

    def uniform(self, low: float, high: float) -> float:
        return high if self.upper else low


def test_a_waiting_turn_looks_again_within_10_ms_then_at_least_every_quarter_second() -> None:
    """The pauses between looks at a chat another replica holds: 5-10 ms at first (a chat
    freed at once is taken at once), doubling up to at most 250 ms (a freed chat is taken
    within a quarter second, and a long wait costs the database four reads a second),
    each drawn between half and all of its step so waiters that met do not poll in step."""
    steps = [0.01, 0.02, 0.04, 0.08, 0.16, 0.25, 0.25, 0.25]
    for upper, share in ((False, 0.5), (True, 1.0)):
        pauses = poll_pauses(_Bound(upper))  # type: ignore[arg-type]
        assert [next(pauses) for _ in steps] == pytest.approx([s * share for s in steps])
    drawn = poll_pauses(random.Random(7))
    for step in steps + [0.25] * 24:
        assert step / 2 <= next(drawn) <= step


async def test_the_sweep_releases_leaked_leases_except_of_chats_a_turn_of_ours_holds(
    sessions: AsyncChatSessions,
) -> None:
    """Leases the database's absence kept from being released (``leaked``) are released
    by the sweep, every one of them, except that of a chat a turn of ours holds right
    now: that turn releases it itself, and releasing it under the turn would let another
    replica in mid-turn. Tried with each chat the held one, whatever the set's order."""
    runtime = sessions._runtime
    leases, store = runtime.leases, runtime.store
    ids = [await sessions.create_chat() for _ in range(3)]
    until = utcnow() + timedelta(seconds=60)
    for held in ids:
        for chat_id in ids:
            _, acquired = await store.try_lease(chat_id, "default", leases.owner, until)
            assert acquired
        leases.leaked.update(ids)
        async with leases.locks.hold(held, 1.0):  # a turn of ours has this chat
            await leases.release_leaked()
            assert leases.leaked == {held}
            assert await store.lease_holder(held) == leases.owner
            for chat_id in set(ids) - {held}:
                assert await store.lease_holder(chat_id) is None
        await leases.release_leaked()  # the turn is over: now it goes too
        assert not leases.leaked
        assert await store.lease_holder(held) is None


def _aware(moment: datetime) -> datetime:
    """SQLite hands the column back naive (in UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
