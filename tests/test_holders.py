"""Lease holders (engine/holders.py): which are known dead, judged on this host by their
process and start time, elsewhere only at start-up and only for this replica's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatsessions.engine import holders
from chatsessions.engine.holders import default_replica_id, is_dead, start_time

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
