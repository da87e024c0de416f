"""The promises of docs/guarantees.md that the stress tests do not reach: each one exercised
on the surface it names (library or HTTP), on SQLite and PostgreSQL where storage is
involved, in a way that fails when the promise is switched off."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa

from chatsessions import (
    AsyncChatSessions,
    BackendTimeout,
    ChatMoved,
    InvalidInput,
    Message,
)
from chatsessions._sessions.chats import request_hash
from chatsessions.config import Settings
from chatsessions.engine import holders
from chatsessions.service import create_app
from chatsessions.testing import FakeLLMServer, Fault
from chatsessions.types import Chat, utcnow
from tests.conftest import PG_URL, LiveServer, make_keys
from tests.procs import Services, free_port, service_env

#: Generous: every wait in this file is for a condition, this is only its upper bound.
PATIENCE = 30.0


@contextmanager
def serving(settings_kwargs: dict[str, object], **overrides: object) -> Iterator[str]:
    """The service on uvicorn with ``overrides`` on the test's settings (and time for slow
    answers); yields its URL."""
    merged = {**settings_kwargs, "request_timeout": PATIENCE, **overrides}
    settings = Settings(**merged)  # type: ignore[arg-type]
    server = LiveServer(create_app(settings)).start()
    try:
        yield server.url
    finally:
        server.stop()


async def until(condition: Any, what: str) -> None:
    """Wait for ``condition()`` to hold, up to :data:`PATIENCE` seconds."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)


async def messages_of(http: httpx.AsyncClient, chat_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = (await http.get(f"/chats/{chat_id}/messages",
                                                 params={"limit": 1000})).json()["data"]
    return data


@pytest.fixture
async def library(settings_kwargs: dict[str, object]) -> AsyncIterator[
        tuple[AsyncChatSessions, dict[str, object]]]:
    """The library with retries by the client (so the tests see them), and its settings."""
    kwargs = {**settings_kwargs, "max_retries": 1, "request_timeout": PATIENCE}
    async with AsyncChatSessions(**kwargs) as chats:  # type: ignore[arg-type]
        yield chats, kwargs


# 1. One turn at a time: a send that cannot get the chat in time --------------------------

async def test_busy_chat_is_409_chat_busy_with_retry_after(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    fake_llm.delay = 5.0  # the first turn holds the chat far longer than the second waits
    with serving(settings_kwargs, busy_timeout=0.5) as url:
        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as http:
            chat_id = (await http.post("/chats", json={})).json()["id"]
            first = asyncio.create_task(
                http.post(f"/chats/{chat_id}/messages", json={"content": "first"}))
            await until(lambda: fake_llm.requests, "the first turn to reach the model")
            second = await http.post(f"/chats/{chat_id}/messages", json={"content": "second"})
            assert second.status_code == 409
            assert second.json()["error"]["type"] == "chat_busy"
            assert int(second.headers["Retry-After"]) >= 1
            assert not first.done()  # refused while the first turn still ran
            assert (await first).status_code == 200
            stored = await messages_of(http, chat_id)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["first"]
    assert len(fake_llm.requests) == 1


# 3. Crash safety: a turn whose message was failed meanwhile ---------------------------

async def test_a_turn_failed_by_recovery_meanwhile_is_409_turn_interrupted(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    """A process of the same replica that takes the holder of a turn still running for
    dead (both run in this test's process: the holder's runtime is marked closed, as a
    dead one would be) fails its pending message in its sweep; that turn must not then
    store its answer."""
    fake_llm.delay = 3.0
    with serving(settings_kwargs, replica_id="pod-7") as url:
        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as http:
            chat_id = (await http.post("/chats", json={})).json()["id"]
            turn = asyncio.create_task(
                http.post(f"/chats/{chat_id}/messages", json={"content": "slow one"}))
            await until(lambda: fake_llm.requests, "the turn to reach the model")
            kwargs = {**settings_kwargs, "replica_id": "pod-7"}
            async with AsyncChatSessions(**kwargs) as restarted:  # type: ignore[arg-type]
                holder = await restarted._runtime.store.lease_holder(chat_id)
                assert holder is not None
                assert holder.startswith("pod-7/")
                holders.closed(holder)
                await restarted.sweep()
                failed = await restarted.history(chat_id, include_failed=True)
            assert [(m.content, m.status.value) for m in failed[1:]] == [("slow one", "failed")]
            response = await turn
            assert response.status_code == 409, response.text
            assert response.json()["error"]["type"] == "turn_interrupted"
            stored = await messages_of(http, chat_id)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "failed")]
    assert "interrupted" in stored[0]["error"].lower()


# 3. A retry that meets a newer turn ------------------------------------------------------

async def test_retry_meeting_a_newer_turn_is_chat_moved(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    """retry reads the failed turn, then queues for the chat behind a regenerate (which
    holds the chat while storing nothing) and a newer send: by its turn the chat has moved."""
    chat_id = await sessions.create_chat()
    await sessions.send(chat_id, "answered")
    fake_llm.inject(Fault.status(500))
    with pytest.raises(Exception, match="500"):
        await sessions.send(chat_id, "lost")
    before = await sessions.history(chat_id, include_failed=True, include_replaced=True)
    for stream_retry in (False, True):
        regenerating = sessions.stream_regenerate(chat_id)
        async with aclosing(regenerating):
            first_delta = await anext(regenerating)  # holds the chat, has stored nothing
            assert isinstance(first_delta, str)
            newer = asyncio.create_task(sessions.send(chat_id, f"newer {stream_retry}"))
            if stream_retry:
                retried = asyncio.create_task(_drain(sessions.stream_retry(chat_id)))
            else:
                retried = asyncio.create_task(sessions.retry(chat_id))
            # Let both read the chat and queue for it (FIFO); the reads take milliseconds,
            # and the chat stays held however long this takes.
            await asyncio.sleep(1.0)
            assert not newer.done()
            assert not retried.done()
            *_, answer = [item async for item in regenerating]
            assert isinstance(answer, Message)
        assert isinstance(await newer, Message)
        with pytest.raises(ChatMoved):
            await retried
        if not stream_retry:  # the failed turn is still the last failed one, now buried
            fake_llm.inject(Fault.status(500))
            with pytest.raises(Exception, match="500"):
                await sessions.send(chat_id, "lost")
    after = await sessions.history(chat_id, include_failed=True, include_replaced=True)
    users = [m.content for m in after if m.role.value == "user"]
    # the retries stored nothing: no "lost" beyond the two the sends stored themselves
    assert users == ["answered", "lost", "newer False", "lost", "newer True"]
    assert len(after) > len(before)


async def _drain(items: Any) -> list[Any]:
    return [item async for item in items]


async def _collect(items: Any, into: list[str]) -> None:
    """Keep the text deltas of a stream in ``into``, as they come (the stream may fail)."""
    async for item in items:
        assert isinstance(item, str)
        into.append(item)


async def test_retry_meeting_a_newer_turn_is_409_over_http(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    with serving(settings_kwargs) as url:
        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as http:
            chat_id = (await http.post("/chats", json={})).json()["id"]
            assert (await http.post(f"/chats/{chat_id}/messages",
                                    json={"content": "answered"})).status_code == 200
            fake_llm.inject(Fault.status(500))
            assert (await http.post(f"/chats/{chat_id}/messages",
                                    json={"content": "lost"})).status_code == 502
            fake_llm.delay = 3.0  # the regenerate holds the chat, storing nothing yet
            regenerate = asyncio.create_task(http.post(f"/chats/{chat_id}/regenerate",
                                                       json={}))
            await until(lambda: len(fake_llm.requests) == 3, "the regenerate's model call")
            retry = await http.post(f"/chats/{chat_id}/retry", json={})
            assert (await regenerate).status_code == 200
    assert retry.status_code == 409, retry.text
    assert retry.json()["error"]["type"] == "chat_moved"
    assert len(fake_llm.requests) == 3  # the retry never reached the model


# 4. Upstream faults ------------------------------------------------------------------

async def test_open_circuit_is_503_without_calling_the_model(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    with serving(settings_kwargs, circuit_failures=2, circuit_cooldown=600) as url:
        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as http:
            chat_id = (await http.post("/chats", json={})).json()["id"]
            fake_llm.inject(Fault.status(500), times=2)
            for n in range(2):
                response = await http.post(f"/chats/{chat_id}/messages",
                                           json={"content": f"fails {n}"})
                assert response.status_code == 502
            refused = await http.post(f"/chats/{chat_id}/messages", json={"content": "open"})
            assert refused.status_code == 503
            assert refused.json()["error"]["type"] == "backend_unavailable"
            stored = await messages_of(http, chat_id)
    assert len(fake_llm.requests) == 2  # the third turn never called the model
    assert [(m["content"], m["status"]) for m in stored] == [
        ("fails 0", "failed"), ("fails 1", "failed"), ("open", "failed")]


async def test_unreachable_model_is_502(settings_kwargs: dict[str, object]) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    with serving(settings_kwargs, openai_base_url=nowhere) as url:
        async with httpx.AsyncClient(base_url=url, timeout=PATIENCE) as http:
            chat_id = (await http.post("/chats", json={})).json()["id"]
            response = await http.post(f"/chats/{chat_id}/messages", json={"content": "hi"})
            stored = await messages_of(http, chat_id)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "backend_error"
    assert "reach" in response.json()["error"]["message"]
    assert [(m["role"], m["status"]) for m in stored] == [("user", "failed")]


async def test_retry_after_is_waited_for(
    library: tuple[AsyncChatSessions, dict[str, object]], fake_llm: FakeLLMServer
) -> None:
    """The model says 429 with Retry-After: 2 s; the retry comes no sooner (the client's
    own backoff would be 0.5 s at most)."""
    sessions, _ = library
    chat_id = await sessions.create_chat()
    fake_llm.inject(Fault.status(429, retry_after=2))
    answer = await sessions.send(chat_id, "after a pause")
    assert answer.status.value == "ok"
    first, again = fake_llm.requests
    assert first.fault == "status_429"
    assert again.fault is None
    assert again.messages == first.messages
    assert 1.95 <= again.at - first.at < PATIENCE


async def test_a_stream_stalling_after_some_chunks_meets_the_turn_deadline(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    """Each chunk arrives well within the request timeout's reach, but the turn's total
    deadline (1.5 s) ends the stream that stalls for 20 s after two chunks."""
    kwargs = {**settings_kwargs, "turn_deadline": 1.5, "request_timeout": 60.0}
    async with AsyncChatSessions(**kwargs) as sessions:  # type: ignore[arg-type]
        chat_id = await sessions.create_chat()
        fake_llm.inject(Fault.stall(after_chunks=2, seconds=20))
        deltas: list[str] = []
        started = time.monotonic()
        with pytest.raises(BackendTimeout, match="deadline"):
            await _collect(sessions.stream(chat_id, "stall please"), deltas)
        elapsed = time.monotonic() - started
        stored = await sessions.history(chat_id, include_failed=True)
    assert 1.4 <= elapsed < 15, elapsed  # the deadline ended it, long before the stall did
    assert "".join(deltas).strip()
    assert [(m.role.value, m.status.value) for m in stored[1:]] == [
        ("user", "failed"), ("assistant", "failed")]
    assert stored[2].content == "".join(deltas)


# 2. Idempotency ----------------------------------------------------------------------

async def test_message_keys_are_scoped_to_their_chat(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    one, two = await sessions.create_chat(), await sessions.create_chat(title="two")
    first = await sessions.send(one, "same words", idempotency_key="k-1")
    second = await sessions.send(two, "same words", idempotency_key="k-1")
    assert (first.chat_id, second.chat_id) == (one, two)
    assert len(fake_llm.requests) == 2  # not a replay of the other chat's turn
    assert [m.content for m in (await sessions.history(two))[1:]] == ["same words",
                                                                     second.content]


def test_chat_request_hash_covers_every_field(http: httpx.Client) -> None:
    body: dict[str, Any] = {"system_prompt": "be brief", "title": "t", "model": "fake-model",
                            "params": {"temperature": 0.5}, "metadata": {"team": "a"}}
    key = {"Idempotency-Key": "create-1"}
    made = http.post("/chats", json=body, headers=key)
    assert made.status_code == 201
    again = http.post("/chats", json=body, headers=key)
    assert again.status_code == 201
    assert again.json()["id"] == made.json()["id"]
    changes: dict[str, Any] = {"system_prompt": "be long", "title": "u", "model": "other",
                               "params": {"temperature": 0.6}, "metadata": {"team": "b"}}
    for field, value in changes.items():
        response = http.post("/chats", json={**body, field: value}, headers=key)
        assert response.status_code == 422, field
        assert "Idempotency-Key" in response.json()["error"]["message"], field
    assert len(http.get("/chats").json()["data"]) == 1


ORDER = {"name": "order_status", "description": "Where an order is.",
         "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}
REFUND = {"name": "refund", "description": "Refund an order.",
          "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}}}


async def test_chat_key_covers_the_context_policy_the_tools_and_the_tool_choice(
    sessions: AsyncChatSessions,
) -> None:
    """The same chat request again, its metadata in another order, is the same chat; the
    same key with another context policy, other tools or another tool choice is refused."""
    asked: dict[str, Any] = {"system_prompt": "S", "context_policy": "summarize",
                             "tools": [ORDER, REFUND], "tool_choice": "auto",
                             "metadata": {"team": "a", "customer": 7}}
    made = await sessions.create_chat(**asked, idempotency_key="create-2")
    assert await sessions.create_chat(**{**asked, "metadata": {"customer": 7, "team": "a"}},
                                      idempotency_key="create-2") == made
    for change in ({"context_policy": "none"}, {"context_policy": "trim"},
                   {"tools": [ORDER]}, {"tool_choice": "required"}, {"tool_choice": None}):
        with pytest.raises(InvalidInput, match="different chat"):
            await sessions.create_chat(**{**asked, **change}, idempotency_key="create-2")
    assert [c.id for c in await sessions.list_chats()] == [made]


async def test_a_chat_key_and_a_model_name_are_at_most_200_characters(
    sessions: AsyncChatSessions,
) -> None:
    assert await sessions.create_chat(idempotency_key="k" * 200, model="m" * 200)
    with pytest.raises(InvalidInput, match="idempotency key"):
        await sessions.create_chat(idempotency_key="k" * 201)
    with pytest.raises(InvalidInput, match="model"):
        await sessions.create_chat(model="m" * 201)
    assert len(await sessions.list_chats()) == 1


def test_chat_keys_stored_before_policies_and_tools_existed_still_match() -> None:
    """A plain chat's request hash is what it was before context policies, tools and
    tool choices were hashed too, so a retry across an upgrade is still the same
    request (the digest is pinned)."""
    chat = Chat(id="x", system_prompt="S", title="t", backend="openai", model="m",
                params={"temperature": 0.5}, metadata={"b": 2, "a": 1})
    assert request_hash(chat) == (
        "076b32e50d8aa6b57eccc98a3b369f5183d505b14797c2d242caa4f91be6558c")


async def test_expiry_forgets_only_the_keys_older_than_the_cutoff(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    old = await sessions.create_chat(idempotency_key="old-chat")
    await sessions.send(old, "old question", idempotency_key="old-turn")
    await asyncio.sleep(0.05)
    cutoff = utcnow()
    await asyncio.sleep(0.05)
    new = await sessions.create_chat(idempotency_key="new-chat")
    await sessions.send(new, "new question", idempotency_key="new-turn")
    store = sessions._runtime.store
    assert await store.expire_idempotency_keys(cutoff) == 1  # the old turn's key
    assert await store.expire_idempotency_keys(cutoff) == 0
    assert await sessions.create_chat(idempotency_key="new-chat") == new
    assert await sessions.create_chat(idempotency_key="old-chat") != old
    replayed = await sessions.send(new, "new question", idempotency_key="new-turn")
    assert replayed.seq == 2
    assert (await sessions.send(old, "old question", idempotency_key="old-turn")).seq == 4


def test_idempotency_key_header_is_at_most_200_characters(
    http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    ok = http.post(f"/chats/{chat_id}/messages", json={"content": "a"},
                   headers={"Idempotency-Key": "k" * 200})
    assert ok.status_code == 200
    refused = http.post(f"/chats/{chat_id}/messages", json={"content": "b"},
                        headers={"Idempotency-Key": "k" * 201})
    assert refused.status_code == 422
    assert "Idempotency-Key" in refused.json()["error"]["message"]
    assert len(fake_llm.requests) == 1


async def test_keys_are_forgotten_by_sweep_after_their_ttl(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    kwargs = {**settings_kwargs, "idempotency_ttl_hours": 1e-6}  # 3.6 ms
    async with AsyncChatSessions(**kwargs) as sessions:  # type: ignore[arg-type]
        chat_id = await sessions.create_chat(idempotency_key="chat-key")
        await sessions.send(chat_id, "once", idempotency_key="turn-key")
        await asyncio.sleep(0.1)  # well past the TTL
        # not yet swept: the keys still hold
        assert await sessions.create_chat(idempotency_key="chat-key") == chat_id
        with pytest.raises(InvalidInput):
            await sessions.send(chat_id, "other", idempotency_key="turn-key")
        await sessions.sweep()
        assert await sessions.create_chat(idempotency_key="chat-key") != chat_id
        again = await sessions.send(chat_id, "other", idempotency_key="turn-key")
        assert again.seq == 4
    assert len(fake_llm.requests) == 2


# 5. Bad input --------------------------------------------------------------------------

def test_chunked_body_over_the_limit_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"system_prompt": "'
        for _ in range(24):
            yield b"x" * 65_536  # 1.5 MiB in all, never announced by a Content-Length
        yield b'"}'

    response = http.post("/chats", content=chunks(),
                         headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert http.get("/chats").json()["data"] == []


def nested(levels: int) -> dict[str, Any]:
    """Metadata that is ``levels`` objects deep."""
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return dict(value)


#: The service's schema: titles up to 500 characters, metadata of at most 32 scalar values
#: (strings up to 512 characters).
HTTP_LIMITS = [
    ({"title": "t" * 500}, True), ({"title": "t" * 501}, False),
    ({"metadata": {"k": "v" * 512}}, True), ({"metadata": {"k": "v" * 513}}, False),
    ({"metadata": {f"k{n}": n for n in range(32)}}, True),
    ({"metadata": {f"k{n}": n for n in range(33)}}, False),
    ({"metadata": nested(2)}, False),
]
#: The library's checks: titles up to 500 characters, metadata up to 16 KiB and 8 levels.
LIBRARY_LIMITS = [
    ({"title": "t" * 500}, True), ({"title": "t" * 501}, False),
    ({"metadata": {"k": "v" * 16_000}}, True), ({"metadata": {"k": "v" * 16_400}}, False),
    ({"metadata": nested(8)}, True), ({"metadata": nested(9)}, False),
]


@pytest.mark.parametrize(("body", "ok"), HTTP_LIMITS)
def test_title_and_metadata_limits_over_http(
    http: httpx.Client, body: dict[str, Any], ok: bool
) -> None:
    response = http.post("/chats", json=body)
    assert response.status_code == (201 if ok else 422), response.text
    assert len(http.get("/chats").json()["data"]) == (1 if ok else 0)


@pytest.mark.parametrize(("body", "ok"), LIBRARY_LIMITS)
async def test_title_and_metadata_limits_in_the_library(
    sessions: AsyncChatSessions, body: dict[str, Any], ok: bool
) -> None:
    if ok:
        assert await sessions.create_chat(**body)
    else:
        with pytest.raises(InvalidInput):
            await sessions.create_chat(**body)
    assert len(await sessions.list_chats()) == (1 if ok else 0)


# 3. SQLite's synchronous setting ---------------------------------------------------------

async def test_sqlite_synchronous_full_is_applied(
    settings_kwargs: dict[str, object], tmp_path: Any
) -> None:
    """A SQLite setting: both the writer's and the readers' connections carry it."""
    pragma = sa.text("PRAGMA synchronous")
    for setting, expected in (("NORMAL", 1), ("FULL", 2)):
        kwargs = {**settings_kwargs, "sqlite_synchronous": setting,
                  "database_url": f"sqlite:///{tmp_path / setting}.db"}
        async with AsyncChatSessions(**kwargs) as sessions:  # type: ignore[arg-type]
            await sessions.create_chat()
            db = sessions._runtime.store.db  # type: ignore[attr-defined]
            assert await db.read(lambda conn: conn.execute(pragma).scalar()) == expected
            assert await db.write_now(lambda conn: conn.execute(pragma).scalar()) == expected


# 3. An abandoned regenerate -----------------------------------------------------------

async def test_an_abandoned_regenerate_leaves_the_chat_unchanged(
    sessions: AsyncChatSessions, fake_llm: FakeLLMServer
) -> None:
    chat_id = await sessions.create_chat()
    await sessions.send(chat_id, "question")
    before = await sessions.history(chat_id, include_failed=True, include_replaced=True)
    counters = counters_of(await sessions.get_chat(chat_id))
    regenerating = sessions.stream_regenerate(chat_id)
    assert isinstance(await anext(regenerating), str)  # the model is answering
    await regenerating.aclose()  # the consumer goes away
    assert len(fake_llm.requests) == 2
    assert await sessions.history(chat_id, include_failed=True, include_replaced=True) == before
    assert counters_of(await sessions.get_chat(chat_id)) == counters
    again = await sessions.regenerate(chat_id)  # and the chat is free for the next one
    assert again.replaces_seq == before[-1].seq


def counters_of(chat: Any) -> tuple[int, int, int]:
    return chat.message_count, chat.prompt_tokens, chat.completion_tokens


# The service: health and who may serve beyond loopback -------------------------------------

async def test_healthz_is_503_when_the_database_is_unreachable(
    settings_kwargs: dict[str, object], pg_database_url: str
) -> None:
    name = f"chatsessions_health_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = f"{pg_database_url.rsplit('/', 1)[0]}/{name}"
    try:
        with serving(settings_kwargs, database_url=url) as base:
            async with httpx.AsyncClient(base_url=base, timeout=PATIENCE) as http:
                assert (await http.get("/healthz")).json() == {"status": "ok", "database": "ok"}
                await _admin(f'DROP DATABASE "{name}" WITH (FORCE)')
                response = await http.get("/healthz")
        assert response.status_code == 503
        assert response.json()["error"]["message"].startswith("database check failed")
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_URL.replace("postgresql://", "postgres://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_serving_beyond_loopback_needs_keys_or_insecure(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    url = f"sqlite:///{tmp_path / 'chats.db'}"
    env = service_env(url, fake_llm.base_url, "edge")
    services = Services(tmp_path)
    try:
        refused = services.make(env, "refused", ("--host", "0.0.0.0"))
        refused.spawn()
        assert refused.process is not None
        assert await asyncio.to_thread(refused.process.wait, PATIENCE) == 2
        assert "refusing to serve 0.0.0.0 without API keys" in refused.log()
        insecure = services.make(env, "insecure", ("--host", "0.0.0.0", "--insecure"))
        insecure.spawn()
        await insecure.ready()
        insecure.stop()
        await asyncio.to_thread(make_keys, url, "acme")
        keyed = services.make(env, "keyed", ("--host", "0.0.0.0"))
        keyed.spawn()
        await keyed.ready()  # /healthz needs no key
    finally:
        services.stop_all()
