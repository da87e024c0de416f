"""Lease holders (engine/holders.py): which are known dead, judged on this host by their
process and start time, elsewhere only at start-up and only for this replica's own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from chatsessions import AsyncChatSessions, ChatBusy, TurnStatus
from chatsessions.engine import holders
from chatsessions.engine.holders import default_replica_id, is_dead, start_time
from chatsessions.types import utcnow

pytestmark = pytest.mark.skipif(holders.host_id() is None, reason="needs Linux /proc")


def owner_of(replica: str, pid: int, start: int | None, host: str | None = None) -> str:
    return f"{replica}/{pid}.0@{host or holders.host_id()}:{start}"


def test_a_new_owner_names_this_process_and_host() -> None:
    owner = holders.new_owner("r")
    holder = holders.parse(owner)
    assert holder is not None
    assert (holder.replica, holder.pid, holder.host, holder.start) == (
        "r", os.getpid(), holders.host_id(), start_time(os.getpid()))
    assert holders.new_owner("r") != owner  # another runtime of this process: another name


@pytest.mark.parametrize("starting", [True, False])
def test_on_this_host_a_holder_is_dead_once_its_process_is(starting: bool) -> None:
    me = holders.new_owner("r")
    holders.opened(me)
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            born = start_time(child.pid)
            assert born is not None
            alive = owner_of("other", child.pid, born)
            assert not is_dead(alive, me, starting=starting)
            # the same pid with another start time: the pid was reused
            assert is_dead(owner_of("other", child.pid, born + 1), me, starting=starting)
        finally:
            child.kill()
            child.wait()
        assert is_dead(alive, me, starting=starting)  # gone
        # this process's own runtimes: alive while open, dead once closed
        sibling = holders.new_owner("r")
        assert is_dead(sibling, me, starting=starting)
        holders.opened(sibling)
        assert not is_dead(sibling, me, starting=starting)
        holders.closed(sibling)
        assert is_dead(sibling, me, starting=starting)
    finally:
        holders.closed(me)


def test_elsewhere_only_this_replicas_earlier_holders_are_dead_and_only_at_start() -> None:
    me = holders.new_owner("r")
    rebooted = owner_of("r", 4242, 99, host="0123456789ab")
    assert is_dead(rebooted, me, starting=True)
    assert not is_dead(rebooted, me, starting=False)  # running: might be a live misnamed twin
    assert not is_dead(owner_of("s", 4242, 99, host="0123456789ab"), me, starting=True)
    for foreign in ("dead", "other", "b-elsewhere", ""):  # names nobody can judge
        assert not is_dead(foreign, me, starting=True)


def test_owners_named_before_hosts_were_judged_by_pid_for_this_replica() -> None:
    me = holders.new_owner("r1")
    assert is_dead("r1/999999999", me, starting=True)
    assert is_dead(f"r1/{os.getpid()}", me, starting=True)  # under our own pid: earlier us
    assert not is_dead(f"r1/{os.getppid()}", me, starting=True)
    assert not is_dead("r2/999999999", me, starting=True)
    assert not is_dead("r1/999999999", me, starting=False)


def test_the_default_replica_id_is_stable_for_a_host_and_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(str(tmp_path))
    relative = default_replica_id("sqlite:///chats.db")
    assert relative == default_replica_id(f"sqlite:///{tmp_path}/chats.db")
    assert relative != default_replica_id(f"sqlite:///{tmp_path}/other.db")
    pg = default_replica_id("postgresql://u@db:5432/app")
    assert pg == default_replica_id("postgresql://u@db:5432/app")
    assert pg != default_replica_id("postgresql://u@db:5432/app2")
    assert len(holders.new_owner(f"{'x' * 64}")) <= 128  # fits the column


@pytest.fixture
def others() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two other processes on this host, to hold leases as replicas would."""
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
                for _ in range(2)]
    yield children
    for child in children:
        child.kill()
        child.wait()


async def test_a_chat_held_by_a_process_gone_from_this_host_is_taken_at_once(
    settings_kwargs: dict[str, object], others: list[subprocess.Popen[bytes]],
) -> None:
    """Other replicas on this host took a chat's lease each (30 s), stored a question and
    were killed: the next send takes the chat at once and fails the orphaned question,
    while a live holder is waited for as ever; a start-up frees the other chat."""
    owners = [owner_of("elsewhere", p.pid, start_time(p.pid)) for p in others]
    async with AsyncChatSessions(**settings_kwargs, busy_timeout=0.5) as chats:  # type: ignore[arg-type]
        store = chats._runtime.store
        busy, at_start = await chats.create_chat(), await chats.create_chat()
        for chat_id, owner in zip((busy, at_start), owners, strict=True):
            _, taken = await store.try_lease(chat_id, "default", owner,
                                             utcnow() + timedelta(seconds=30))
            assert taken
            await store.add_user_message(chat_id, "in flight when it died")
        with pytest.raises(ChatBusy):  # alive: its lease holds
            await chats.send_message(busy, "too early")
        for child in others:
            child.kill()
            child.wait()
        assert await store.lease_holder(at_start) == owners[1]  # not this one's to free
        started = time.monotonic()
        assert await chats.send_message(busy, "after its death")
        assert time.monotonic() - started < 10  # not the 30 s lease
        rows = await chats.history(busy, include_failed=True)
        assert [(m.content, m.status) for m in rows[1:]][:1] == [
            ("in flight when it died", TurnStatus.FAILED)]
    async with AsyncChatSessions(**settings_kwargs) as again:  # type: ignore[arg-type]
        rows = await again._runtime.store.messages(at_start)
        assert [m.status for m in rows] == [TurnStatus.FAILED]  # recovered at start-up
        assert await again._runtime.store.lease_holder(at_start) is None
