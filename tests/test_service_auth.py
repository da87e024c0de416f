"""Tenants and API keys: a tenant sees only its own chats; others' ids are simply not found."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx

from chatsessions.config import Settings
from chatsessions.service import create_app
from chatsessions.store import open_store
from tests.conftest import LiveServer, make_keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_required_once_configured(keyed: tuple[LiveServer, str, str]) -> None:
    server, key_a, _ = keyed
    with httpx.Client(base_url=server.url) as http:
        for headers in ({}, bearer("cs_wrong"), {"Authorization": f"Basic {key_a}"}):
            response = http.get("/chats", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "unauthorized"
        assert http.get("/chats", headers=bearer(key_a)).status_code == 200


def test_cross_tenant_access_is_not_found_and_changes_nothing(
    keyed: tuple[LiveServer, str, str],
) -> None:
    server, key_a, key_b = keyed
    with httpx.Client(base_url=server.url, timeout=30) as http:
        a = bearer(key_a)
        b = bearer(key_b)
        chat_id = http.post("/chats", json={"title": "secret"}, headers=a).json()["id"]
        http.post(f"/chats/{chat_id}/messages", json={"content": "private"}, headers=a)
        before = http.get(f"/chats/{chat_id}", headers=a).json()

        assert http.get("/chats", headers=b).json()["data"] == []
        attempts = [
            http.get(f"/chats/{chat_id}", headers=b),
            http.get(f"/chats/{chat_id}/messages", headers=b),
            http.post(f"/chats/{chat_id}/messages", json={"content": "peek"}, headers=b),
            http.post(f"/chats/{chat_id}/messages", json={"content": "peek", "stream": True},
                      headers=b),
            http.get(f"/chats/{chat_id}/export", headers=b),
            http.patch(f"/chats/{chat_id}", json={"title": "mine now"}, headers=b),
            http.delete(f"/chats/{chat_id}", headers=b),
        ]
        for response in attempts:
            assert response.status_code == 404, response.request.url
            assert response.json()["error"]["type"] == "not_found"
        # byte-for-byte the same answer as for an id that never existed (the id aside)
        never_id = "00000000-0000-0000-0000-000000000000"
        never = http.get(f"/chats/{never_id}", headers=b)
        assert never.status_code == attempts[0].status_code
        assert never.content.replace(never_id.encode(), chat_id.encode()) == attempts[0].content
        assert never.headers["content-type"] == attempts[0].headers["content-type"]

        after = http.get(f"/chats/{chat_id}", headers=a).json()
        assert after == before
        assert len(http.get(f"/chats/{chat_id}/messages", headers=a).json()["data"]) == 2


def test_rate_limit_per_key(settings_kwargs: dict[str, object]) -> None:
    key_a, key_b = make_keys(str(settings_kwargs["database_url"]), "a", "b")
    settings = Settings(**{**settings_kwargs, "rate_limit_per_minute": 3})  # type: ignore[arg-type]
    server = LiveServer(create_app(settings)).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            statuses = [http.get("/chats", headers=bearer(key_a)).status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            limited = http.get("/chats", headers=bearer(key_a))
            assert int(limited.headers["Retry-After"]) >= 1
            assert limited.json()["error"]["type"] == "rate_limited"
            assert http.get("/chats", headers=bearer(key_b)).status_code == 200
    finally:
        server.stop()


def test_only_the_hash_is_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    (secret,) = make_keys(url, "acme")

    async def stored() -> list[str]:
        store = open_store(url)
        await store.open()
        try:
            return [k.key_hash for k in await store.list_api_keys()]
        finally:
            await store.close()

    assert asyncio.run(stored()) == [hashlib.sha256(secret.encode()).hexdigest()]
    assert secret.encode() not in (tmp_path / "k.db").read_bytes()
