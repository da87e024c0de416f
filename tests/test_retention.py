"""Retention: archive, per-chat expiry and the sweep that really deletes expired chats."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

from chatsessions import AsyncChatSessions
from chatsessions.store.engines import connect
from chatsessions.testing import FakeLLMServer
from chatsessions.types import utcnow
from tests.conftest import LiveServer
from tests.test_cli import cli_env, run


async def count_messages(url: str, chat_id: str) -> int:
    db = connect(url)
    try:
        return int(await db.read(lambda conn: conn.execute(
            sa.text("SELECT count(*) FROM messages WHERE chat_id = :c"), {"c": chat_id}
        ).scalar_one()))
    finally:
        await db.dispose()


async def test_archive_hides_from_list_until_unarchived(sessions: AsyncChatSessions) -> None:
    kept = await sessions.create_chat(title="kept")
    archived = await sessions.create_chat(title="old")
    chat = await sessions.archive_chat(archived)
    assert chat.archived_at is not None
    assert [c.id for c in await sessions.list_chats()] == [kept]
    assert {c.id for c in await sessions.list_chats(include_archived=True)} == {kept, archived}
    assert [c.id for c in await sessions.list_chats(archived=True)] == [archived]
    await sessions.send(archived, "still usable")
    assert (await sessions.unarchive_chat(archived)).archived_at is None
    assert len(await sessions.list_chats()) == 2


async def test_sweep_deletes_expired_chats_and_their_messages(
    sessions: AsyncChatSessions, database_url: str
) -> None:
    soon = utcnow() + timedelta(hours=1)
    expiring = await sessions.create_chat(expires_at=soon)
    assert (await sessions.get_chat(expiring)).expires_at == soon
    staying = await sessions.create_chat()
    other_tenant = sessions.for_tenant("other")
    theirs = await other_tenant.create_chat()
    for chat_id in (expiring, staying):
        await sessions.send(chat_id, "hello")
    await other_tenant.send(theirs, "hello")
    assert await count_messages(database_url, expiring) == 2

    await sessions.sweep()
    assert len(await sessions.list_chats()) == 2  # not yet expired

    past = utcnow() - timedelta(seconds=1)
    await sessions.update_chat(expiring, expires_at=past)
    await other_tenant.update_chat(theirs, expires_at=past)
    await sessions.update_chat(staying, expires_at=past)
    await sessions.update_chat(staying, expires_at=None)  # cleared again
    await sessions.sweep()
    assert [c.id for c in await sessions.list_chats()] == [staying]
    assert await other_tenant.list_chats() == []
    assert await count_messages(database_url, expiring) == 0
    assert await count_messages(database_url, theirs) == 0
    assert await count_messages(database_url, staying) == 2


def test_archive_and_expiry_over_http(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        when = "2999-01-01T00:00:00Z"
        created = client.post("/chats", json={"title": "a", "expires_at": when}).json()
        assert created["expires_at"].startswith("2999-01-01T00:00:00")
        assert created["archived_at"] is None
        other = client.post("/chats", json={"title": "b"}).json()["id"]
        chat = created["id"]

        archived = client.post(f"/chats/{chat}/archive")
        assert archived.status_code == 200
        assert archived.json()["archived_at"] is not None

        def ids(**params: str) -> list[str]:
            return [c["id"] for c in client.get("/chats", params=params).json()["data"]]
        assert ids() == [other]
        assert ids(archived="true") == [chat]
        assert set(ids(archived="all")) == {chat, other}
        assert client.get("/chats", params={"archived": "maybe"}).status_code == 422
        assert client.post(f"/chats/{chat}/unarchive").json()["archived_at"] is None
        assert set(ids()) == {chat, other}
        assert client.post("/chats/nope/archive").status_code == 404

        cleared = client.patch(f"/chats/{chat}", json={"expires_at": None}).json()
        assert cleared["expires_at"] is None
        past = client.patch(f"/chats/{chat}", json={"expires_at": "2000-01-01T00:00:00+02:00"})
        assert past.json()["expires_at"].startswith("1999-12-31T22:00:00")
        assert client.patch(f"/chats/{chat}", json={"expires_at": "soon"}).status_code == 422


def test_archive_from_the_command_line(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    env = cli_env(tmp_path, fake_llm)
    chat_id = run(env, "new", "--title", "old one").stdout.strip()
    archived = run(env, "archive", chat_id)
    assert archived.returncode == 0, archived.stderr
    assert chat_id not in run(env, "list").stdout
    listed = run(env, "list", "--include-archived").stdout
    assert chat_id in listed
    assert "(archived)" in listed
    assert run(env, "archive", "--undo", chat_id).returncode == 0
    assert chat_id in run(env, "list").stdout
    assert run(env, "archive", "nope").returncode == 3
