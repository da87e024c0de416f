"""Shared fixtures: a real fake-LLM server, real SQLite files and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import openai
import pytest

from chatsessions import AsyncChatSessions
from chatsessions.testing import FakeLLMServer

PG_URL = os.environ.get("CHATSESSIONS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLMServer) -> FakeLLMServer:
    """The session's fake model, with an empty log and default behaviour."""
    fake_llm_server.reset()
    fake_llm_server.delay = 0.0
    fake_llm_server.fault_rate = 0.0
    return fake_llm_server


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL.replace("postgresql://", "postgres://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A database of our own on the PostgreSQL server, dropped at the end."""
    name = f"chatsessions_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage test runs on a fresh SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chats.db'}"
    url: str = request.getfixturevalue("pg_database_url")
    asyncio.run(_truncate(url))
    return url


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://", 1))
    try:
        tables = [name for name in ("chats", "messages", "api_keys", "usage_counters")
                  if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)]
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
def settings_kwargs(database_url: str, fake_llm: FakeLLMServer) -> dict[str, object]:
    return {
        "database_url": database_url,
        "backend": "openai",
        "model": "fake-model",
        "openai_base_url": fake_llm.base_url,
        "openai_api_key": "test",
        "max_retries": 0,
        "request_timeout": 2.0,
        # Titles are extra model calls in the background: tests that want them say so.
        "auto_title": False,
    }


@pytest.fixture
async def sessions(settings_kwargs: dict[str, object]) -> AsyncIterator[AsyncChatSessions]:
    async with AsyncChatSessions(**settings_kwargs) as chats:  # type: ignore[arg-type]
        yield chats


class LiveServer:
    """The real service on uvicorn, on a free loopback port, in a background thread."""

    def __init__(self, app: object) -> None:
        import socket
        import threading

        import uvicorn

        from chatsessions.service.protocol import http_protocol

        self.sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, log_level="warning",  # type: ignore[arg-type]
                                access_log=False, timeout_graceful_shutdown=2,
                                http=http_protocol())  # as ``chatsessions serve`` runs
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)

    def start(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def live_server(settings_kwargs: dict[str, object]) -> Iterator[LiveServer]:
    """The service against the fake model, on SQLite and on PostgreSQL."""
    from chatsessions.config import Settings
    from chatsessions.service import create_app

    server = LiveServer(create_app(Settings(**settings_kwargs))).start()  # type: ignore[arg-type]
    yield server
    server.stop()


def make_keys(url: str, *tenants: str) -> list[str]:
    """API keys, one per tenant, created in the database at ``url`` (secrets returned)."""
    from chatsessions import ChatSessions

    with ChatSessions(database_url=url) as chats:
        return [chats.keys.create(tenant, name="test")[1] for tenant in tenants]


@pytest.fixture
def keyed(settings_kwargs: dict[str, object]) -> Iterator[tuple[LiveServer, str, str]]:
    """The service with two tenants' keys configured: (server, acme's key, globex's key)."""
    from chatsessions.config import Settings
    from chatsessions.service import create_app

    key_a, key_b = make_keys(str(settings_kwargs["database_url"]), "acme", "globex")
    server = LiveServer(create_app(Settings(**settings_kwargs))).start()  # type: ignore[arg-type]
    yield server, key_a, key_b
    server.stop()


@pytest.fixture
def sdk(live_server: LiveServer) -> Iterator[openai.OpenAI]:
    """The official ``openai`` client, unmodified, pointed at the live service's /v1."""
    with openai.OpenAI(base_url=live_server.url + "/v1", api_key="any key",
                       max_retries=0) as client:
        yield client


@pytest.fixture
async def async_sdk(live_server: LiveServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=live_server.url + "/v1", api_key="any key",
                                  max_retries=0) as client:
        yield client


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, object]]]:
    """The Server-Sent Events of a whole response, as (event, data) pairs."""
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    """Plain HTTP to the live service, for what the SDK cannot show."""
    with httpx.Client(base_url=live_server.url, timeout=30) as plain:
        yield plain
