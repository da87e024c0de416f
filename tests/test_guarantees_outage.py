"""Guarantee: the database going away is an expected fault.

The live service reaches PostgreSQL through a TCP proxy this test controls. Under five
chats of steady turns the proxy drops every connection and refuses new ones for 2.5 s (as
a server restart does), then lets them through again. No request may get a 500; each
failure is a 503 ``database_unavailable`` with Retry-After; the log holds one warning and
one recovery line, no traceback; ``/healthz`` says 503 during and 200 after; the first
turn of each chat after the database is back succeeds; nothing is left pending and no
acknowledged message is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from chatsessions import AsyncChatSessions, DatabaseUnavailable
from chatsessions.config import Settings
from chatsessions.service import create_app
from chatsessions.store.sql import SQLStore
from chatsessions.testing import FakeLLMServer
from tests.conftest import LiveServer, _truncate
from tests.procs import report
from tests.test_turn_writes import terminate_others

CHATS = 5
OUTAGE_S = 2.5
#: turns each chat must have answered after the outage before the load stops
AFTER = 3
LEASE_TTL = 12.0


class Proxy:
    """A TCP proxy in front of PostgreSQL that can go down: every open connection is
    aborted and the port closed (connections refused), then opened again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        for task in list(self.pipes):
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.pipes.add(task)
        self.writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            self.writers.add(upstream)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.transport.abort()
                    self.writers.discard(end)
            self.pipes.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.transport.abort()


@dataclass
class Outcome:
    chat: int
    text: str
    started: float
    ended: float
    status: int
    body: dict[str, Any]
    retry_after: str | None


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)
    health: list[tuple[float, int, dict[str, Any], str | None]] = field(default_factory=list)
    v1: list[tuple[float, int, dict[str, Any], str | None]] = field(default_factory=list)
    back_at: float | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def answered_after(self, chat: int) -> int:
        back = self.back_at
        return sum(1 for o in self.outcomes if o.chat == chat and o.status == 200
                   and back is not None and o.started > back)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    proxy = Proxy(5432)
    await proxy.up()
    yield proxy
    if proxy.server is not None:
        await proxy.down()


async def chat_load(http: httpx.AsyncClient, chat_id: str, index: int, load: Load) -> None:
    n = 0
    while not load.stop.is_set():
        text = f"chat {index} turn {n}"
        n += 1
        started = time.monotonic()
        response = await http.post(f"/chats/{chat_id}/messages", json={"content": text})
        load.outcomes.append(Outcome(index, text, started, time.monotonic(),
                                     response.status_code, response.json(),
                                     response.headers.get("retry-after")))
        if response.status_code != 200:
            await asyncio.sleep(0.1)  # sooner than Retry-After: probe the outage often


async def probe(http: httpx.AsyncClient, path: str,
                into: list[tuple[float, int, dict[str, Any], str | None]], load: Load) -> None:
    while not load.stop.is_set():
        response = await http.get(path)
        into.append((time.monotonic(), response.status_code, response.json(),
                     response.headers.get("retry-after")))
        await asyncio.sleep(0.1)


async def test_database_restart_under_load_is_a_503_not_a_500(
    pg_database_url: str, proxy: Proxy, fake_llm: FakeLLMServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _truncate(pg_database_url)
    name = pg_database_url.rsplit("/", 1)[1]
    via_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}"
    fake_llm.delay = 0.02  # turns are in flight when the connections drop
    caplog.set_level(logging.DEBUG, logger="chatsessions")
    caplog.set_level(logging.INFO)
    # The periodic sweep runs every lease period: long enough here that a chat left
    # blocked by the outage would show in its first turn's time (see below).
    settings = Settings(database_url=via_proxy, backend="openai", model="fake-model",
                        openai_base_url=fake_llm.base_url, openai_api_key="test",
                        max_retries=0, auto_title=False, lease_ttl=LEASE_TTL)
    # started and stopped off this loop, which runs the proxy the service connects through
    server = await asyncio.to_thread(LiveServer(create_app(settings)).start)
    load = Load()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            chats = [(await http.post("/chats", json={})).json()["id"] for _ in range(CHATS)]
            conversation = (await http.post("/v1/conversations", json={})).json()["id"]
            workers = [asyncio.create_task(chat_load(http, chat_id, index, load))
                       for index, chat_id in enumerate(chats)]
            workers.append(asyncio.create_task(probe(http, "/healthz", load.health, load)))
            workers.append(asyncio.create_task(
                probe(http, f"/v1/conversations/{conversation}", load.v1, load)))
            await asyncio.sleep(1.0)
            down_at = time.monotonic()
            await proxy.down()
            await asyncio.sleep(OUTAGE_S)
            await proxy.up()
            load.back_at = time.monotonic()
            deadline = load.back_at + 60
            while any(load.answered_after(c) < AFTER for c in range(CHATS)):
                assert time.monotonic() < deadline, Counter(o.status for o in load.outcomes)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # a few more health probes after the recovery
            load.stop.set()
            await asyncio.gather(*workers)
            pending = await wait_until_nothing_pending(pg_database_url, name)
            stored = await http.get("/healthz")
    finally:
        await asyncio.to_thread(server.stop)

    back = load.back_at
    assert back is not None
    statuses = Counter(o.status for o in load.outcomes)
    failures = [o for o in load.outcomes if o.status != 200]
    # No 500, and every failure says what it is and when to come back.
    assert 500 not in statuses, [o.body for o in failures if o.status == 500]
    assert failures, "the outage was not noticed: the test proved nothing"
    for o in failures:
        assert o.status == 503, o
        assert o.body["error"]["type"] == "database_unavailable", o
        assert o.retry_after is not None, o
        assert int(o.retry_after) >= 1, o
        assert o.started < back, f"failed after the database was back: {o}"
    # The first turn of every chat started after the database was back succeeded, without
    # waiting for a lease the outage left behind to expire or be swept.
    for chat in range(CHATS):
        first = min((o for o in load.outcomes if o.chat == chat and o.started > back),
                    key=lambda o: o.started)
        assert first.status == 200, first
        assert first.ended - back < LEASE_TTL / 2, first
    # /healthz: 503 with the reason while down, 200 once back.
    during = [h for h in load.health if down_at + 0.3 < h[0] < back]
    assert during, "no health check ran during the outage"
    assert all(h[1] == 503 for h in during), during
    assert all(h[2]["error"]["type"] == "database_unavailable" and h[3] for h in during)
    assert all(h[1] == 200 for h in load.health if h[0] > back + 1.0)
    assert stored.status_code == 200
    # /v1 speaks OpenAI's error shape during the outage.
    v1_down = [v for v in load.v1 if v[1] != 200]
    assert v1_down, "no /v1 request saw the outage"
    for _, status, body, retry_after in v1_down:
        assert status == 503, body
        assert retry_after, body
        assert body["error"]["code"] == "database_unavailable", body
        assert body["error"]["type"] == "server_error", body
        assert "param" in body["error"], body
    # The log: one warning, one recovery line, no traceback, nothing at error level.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["chatsessions.store"], \
        [r.getMessage() for r in warnings]
    assert "database unavailable" in warnings[0].getMessage()
    recovered = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(recovered) == 1
    assert recovered[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], \
        [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # Nothing left pending; every acknowledged turn is stored, answered, in its chat.
    assert pending == 0
    acknowledged = [o for o in load.outcomes if o.status == 200]
    kept = await stored_turns(pg_database_url)
    for o in acknowledged:
        assert (chats[o.chat], o.body["seq"]) in kept["answers"], o
        assert (chats[o.chat], o.text) in kept["ok_users"], o
    report("database_outage", turns=len(load.outcomes), answered=len(acknowledged),
           unavailable=statuses[503], outage_s=OUTAGE_S,
           health_503=sum(1 for h in load.health if h[1] == 503),
           recovered_after_s=round(min(o.ended for o in acknowledged if o.started > back)
                                   - back, 3))


async def wait_until_nothing_pending(url: str, name: str,
                                     within: float = 3 * LEASE_TTL) -> int:
    """Pending messages once the periodic sweep has had its chance (turns left pending by
    the outage are failed by the next turn on their chat or by the sweep)."""
    deadline = time.monotonic() + within
    while True:
        conn = await asyncpg.connect(url.replace("postgresql://", "postgres://", 1))
        try:
            pending = int(await conn.fetchval(
                "SELECT count(*) FROM messages WHERE status = 'pending'"))
        finally:
            await conn.close()
        if pending == 0 or time.monotonic() > deadline:
            return pending
        await asyncio.sleep(0.2)


async def stored_turns(url: str) -> dict[str, set[tuple[str, Any]]]:
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://", 1))
    try:
        rows = await conn.fetch("SELECT chat_id, seq, role, content, status FROM messages")
    finally:
        await conn.close()
    return {
        "answers": {(r["chat_id"], r["seq"]) for r in rows
                    if r["role"] == "assistant" and r["status"] == "ok"},
        "ok_users": {(r["chat_id"], r["content"]) for r in rows
                     if r["role"] == "user" and r["status"] == "ok"},
    }


async def test_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    """SQLite's "unable to open database file" is the same expected fault: the store's
    readers open their connections lazily, and the directory has gone."""
    folder = tmp_path / "data"
    store = SQLStore(f"sqlite:///{folder / 'chats.db'}")
    await store.open()
    try:
        shutil.rmtree(folder)
        with pytest.raises(DatabaseUnavailable) as caught:
            await store.get_chat("c1", "default")
        assert caught.value.type == "database_unavailable"
        assert caught.value.reason == "OperationalError"
        assert store.db.outage.since is not None
    finally:
        with contextlib.suppress(Exception):
            await store.close()


async def test_first_read_after_a_restart_nobody_saw_succeeds(pg_database_url: str) -> None:
    """A service idle while the database restarted: its pooled connections are dead
    though no call failed on them. The first call replaces them before use (no ping)."""
    await _truncate(pg_database_url)
    store = SQLStore(pg_database_url)
    await store.open()
    try:
        await asyncio.gather(*(store.ping() for _ in range(3)))  # a few pooled connections
        await terminate_others(pg_database_url)
        await asyncio.sleep(0.2)
        assert await store.get_chat("c1", "default") is None
        await store.ping()
        assert store.db.outage.since is None
        assert store.db.outage.failures == 0
    finally:
        await store.close()



async def test_leases_an_outage_kept_from_being_released_are_released_once_it_is_over(
    pg_database_url: str, proxy: Proxy, fake_llm: FakeLLMServer
) -> None:
    """Two turns' answers, and so their leases' release, meet the database gone: once it
    is back, the next turn on one chat releases the lease first, and the sweep releases
    the other's, so neither chat waits out a lease period (30 s here)."""
    await _truncate(pg_database_url)
    url = pg_database_url.replace(":5432/", f":{proxy.port}/")
    async with AsyncChatSessions(
        database_url=url, backend="openai", model="fake-model",
        openai_base_url=fake_llm.base_url, openai_api_key="test", max_retries=0,
        request_timeout=5.0, auto_title=False, lease_ttl=30.0, busy_timeout=2.0,
    ) as chats:
        one, two = await chats.create_chat(), await chats.create_chat()
        fake_llm.delay = 1.0
        turns = [asyncio.ensure_future(chats.send_message(c, "cut off")) for c in (one, two)]
        deadline = time.monotonic() + 10
        while len(fake_llm.requests) < 2:  # both questions stored, both leases held
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await proxy.down()
        for outcome in await asyncio.gather(*turns, return_exceptions=True):
            assert isinstance(outcome, DatabaseUnavailable)
        await proxy.up()
        fake_llm.delay = 0.0
        store = chats._runtime.store
        assert await store.lease_holder(two) == chats._runtime.owner  # still held
        assert await chats.send_message(one, "after the outage")
        await chats.sweep()
        assert await store.lease_holder(two) is None
        assert await chats.send_message(two, "after the sweep")


async def test_a_lease_write_the_outage_hid_is_released_once_it_is_over(
    pg_database_url: str, proxy: Proxy, fake_llm: FakeLLMServer
) -> None:
    """A turn whose lease write meets the database gone cannot know whether the write
    happened: taking the lease the slow way (a chat another instance wrote last) or with
    its question's write (a chat as this process left it). Both chats are remembered, and
    once the database is back the sweep releases whatever lease they may hold."""
    await _truncate(pg_database_url)
    url = pg_database_url.replace(":5432/", f":{proxy.port}/")
    options: dict[str, Any] = dict(
        backend="openai", model="fake-model", openai_base_url=fake_llm.base_url,
        openai_api_key="test", max_retries=0, auto_title=False, lease_ttl=30.0,
        busy_timeout=2.0)
    async with (
        AsyncChatSessions(database_url=url, **options) as chats,
        AsyncChatSessions(database_url=pg_database_url, **options) as other,
    ):
        slow = await other.create_chat()
        presumed = await chats.create_chat()
        assert await chats.send_message(presumed, "before the outage")
        assert chats._runtime.presumed_chat(presumed) is not None
        assert chats._runtime.presumed_chat(slow) is None
        await proxy.down()
        for chat_id in (slow, presumed):
            with pytest.raises(DatabaseUnavailable):
                await chats.send_message(chat_id, "cut off")
        assert chats._runtime.leases.leaked == {slow, presumed}
        await proxy.up()
        await chats.sweep()
        assert not chats._runtime.leases.leaked
        for chat_id in (slow, presumed):
            assert await other._runtime.store.lease_holder(chat_id) is None
            assert await other.send_message(chat_id, "after the outage")
