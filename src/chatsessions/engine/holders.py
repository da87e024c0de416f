"""Who holds a turn lease, and whether that holder is known to be dead.

A lease owner is named ``REPLICA/PID.N@HOST:START``: the replica id, the process and
which of its runtimes (``N``), the host (a hash of the kernel's boot id, the hostname and
the pid namespace) and the process's start time (``/proc/<pid>/stat`` field 22). On the
same host a holder is dead at once when its pid is gone or now belongs to a process that
started at another time, or, in this very process, when its runtime was closed. So a
plain ``serve`` killed and restarted, or a worker killed, frees its chats at start-up
instead of after the lease. On other hosts only the lease's expiry tells.

The default replica id is stable for a host and database (a hash of both), so a
restarted process without ``CHATSESSIONS_REPLICA_ID`` finds its earlier leases; at start
a process also takes over the leases its replica held on another host (a rebooted
machine): one replica id runs in one place at a time.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import socket
from dataclasses import dataclass
from functools import cache

#: runtimes of this process, numbered; those open hold leases under their own name
_numbers = itertools.count()
_open: set[str] = set()

_OWNER = re.compile(
    r"^(?P<replica>.*)/(?P<pid>\d+)\.(?P<n>\d+)@(?P<host>[0-9a-f]+):(?P<start>\d+)$")
_LEGACY = re.compile(r"^(?P<replica>.*)/(?P<pid>\d+)$")


@dataclass(frozen=True, slots=True)
class Holder:
    replica: str
    pid: int
    #: None for an owner named before hosts were (``REPLICA/PID``)
    host: str | None = None
    start: int = 0
    number: int = 0


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read().strip()
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (None if it is gone or this
    is not Linux). The name after the pid may hold spaces and parentheses: the fields are
    counted from the last ``)``."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


@cache
def host_id() -> str | None:
    """This kernel boot, hostname and pid namespace as 12 hex digits; None where the boot
    id cannot be read (not Linux): then no holder is judged by its process."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    if not boot:
        return None
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    seed = "\n".join((boot, socket.gethostname(), namespace))
    return hashlib.sha256(seed.encode()).hexdigest()[:12]


def default_replica_id(database_url: str) -> str:
    """Stable for this host and database: the hostname (cut, as a reader's hint) and a
    hash of the hostname, the pid namespace and the database (a SQLite file by its real
    path). Two containers sharing a hostname are told apart by their pid namespaces."""
    where = database_url
    if where.startswith("sqlite") and ":///" in where:
        path = where.split(":///", 1)[1].split("?", 1)[0]
        if path and path != ":memory:":
            where = "sqlite:" + os.path.realpath(path)
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    hostname = socket.gethostname()
    digest = hashlib.sha256("\n".join((hostname, namespace, where)).encode()).hexdigest()
    hint = re.sub(r"[^A-Za-z0-9_.-]", "-", hostname)[:24] or "host"
    return f"{hint}-{digest[:12]}"


def new_owner(replica: str) -> str:
    """The lease owner name of a new runtime of this process."""
    pid = os.getpid()
    host = host_id()
    if host is None:
        return f"{replica}/{pid}.{next(_numbers)}@0:0"
    return f"{replica}/{pid}.{next(_numbers)}@{host}:{start_time(pid) or 0}"


def opened(owner: str) -> None:
    _open.add(owner)


def closed(owner: str) -> None:
    _open.discard(owner)


def parse(owner: str) -> Holder | None:
    found = _OWNER.match(owner)
    if found is not None:
        host = found["host"]
        return Holder(found["replica"], int(found["pid"]), None if host == "0" else host,
                      int(found["start"]), int(found["n"]))
    legacy = _LEGACY.match(owner)
    if legacy is not None:
        return Holder(legacy["replica"], int(legacy["pid"]))
    return None


def is_dead(owner: str, me: str, *, starting: bool) -> bool:
    """Whether ``owner`` is known to be dead, judged by the runtime named ``me``.

    On this host: its process is gone, or is another process now, or it is one of this
    process's runtimes that was closed. ``starting``: also a holder of this replica
    elsewhere (another host or boot: an earlier incarnation, as one replica id runs in
    one place at a time) and, for owners named before hosts were, one of this replica's
    pids that no longer runs here."""
    holder, mine = parse(owner), parse(me)
    if holder is None or mine is None:
        return False
    if holder.host is not None and holder.host == mine.host:
        if holder.pid == mine.pid and holder.start == mine.start:
            return owner not in _open
        if not holder.start:  # its start time was unknown: the pid alone tells
            return not _alive(holder.pid)
        return start_time(holder.pid) != holder.start
    if not starting or holder.replica != mine.replica:
        return False
    if holder.host is not None:
        return True
    return holder.pid == mine.pid or not _alive(holder.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
