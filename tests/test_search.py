"""Full-text search across a tenant's chats: library, HTTP API and CLI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from chatsessions import AsyncChatSessions, InvalidInput
from chatsessions.store import search as fulltext
from chatsessions.store import title_search
from chatsessions.store.engines import CHECKPOINT_EVERY, ThreadedSQLite
from chatsessions.store.sql import SQLStore
from chatsessions.testing import FakeLLMServer
from chatsessions.types import Chat, Message, Role
from tests.conftest import LiveServer
from tests.test_cli import cli_env, run


async def test_a_word_said_in_turn_40_is_found_only_in_its_tenant(
    sessions: AsyncChatSessions,
) -> None:
    chat = await sessions.create_chat()
    noise = await sessions.create_chat()
    for turn in range(1, 41):
        text = "My order number is Kumquat-7731" if turn == 40 else f"question {turn}"
        await sessions.send(chat, text)
    await sessions.send(noise, "nothing to see")
    stranger = sessions.for_tenant("other")
    theirs = await stranger.create_chat()
    await stranger.send(theirs, "kumquat kumquat")

    hits = await sessions.search("kumquat")
    users = [h for h in hits if h.role is Role.USER]
    assert [(h.chat_id, h.seq) for h in users] == [(chat, 79)]  # turn 40's user message
    assert "[Kumquat]" in users[0].snippet
    assert all(h.chat_id == chat for h in hits)  # the answer may quote it, same chat
    assert [h.chat_id for h in await stranger.search("kumquat")] == [theirs, theirs]
    assert await sessions.search("kumquat missingword") == []
    assert await sessions.search('"kumquat* (-') != []  # words, never query syntax
    assert len(await sessions.search("question", limit=5)) == 5

    await sessions.delete_chat(chat)
    assert await sessions.search("kumquat") == []
    with pytest.raises(InvalidInput):
        await sessions.search("x", limit=0)


def test_search_over_http(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        chat = client.post("/chats", json={}).json()["id"]
        client.post(f"/chats/{chat}/messages", json={"content": "the pangolin arrived"})
        hits = client.get("/search", params={"q": "Pangolin"}).json()["data"]
        assert {(h["chat_id"], h["seq"], h["role"]) for h in hits} >= {(chat, 1, "user")}
        assert "[pangolin]" in hits[0]["snippet"]
        assert len(client.get("/search", params={"q": "pangolin", "limit": 1}).json()["data"]) == 1
        assert client.get("/search", params={"q": ""}).status_code == 422
        assert client.get("/search").status_code == 422
        assert client.delete(f"/chats/{chat}").status_code == 204
        assert client.get("/search", params={"q": "pangolin"}).json()["data"] == []


def test_search_from_the_command_line(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    env = cli_env(tmp_path, fake_llm)
    chat_id = run(env, "new").stdout.strip()
    run(env, "send", chat_id, "my capybara is lost")
    found = run(env, "search", "capybara")
    assert found.returncode == 0, found.stderr
    assert chat_id in found.stdout
    assert "[capybara]" in found.stdout
    assert chat_id not in run(env, "search", "wombat").stdout


async def _sqlite_store(tmp_path: Path) -> SQLStore:
    store = SQLStore(f"sqlite:///{tmp_path / 'search.db'}")
    await store.open()
    chat = Chat(id="c", system_prompt="Be kind.", backend="openai", model="m")
    await store.create_chat(chat)
    return store


def _said(*texts: str) -> list[Message]:
    return [Message(chat_id="c", seq=0, role=Role.USER, content=text) for text in texts]


async def _consistent(store: SQLStore) -> None:
    """FTS5's own check of the index against every message (so only once caught up)."""
    check = sa.text("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")
    await store.db.write(lambda conn: conn.execute(check))


async def test_the_batched_index_survives_deletes_and_rowids_handed_out_again(
    tmp_path: Path,
) -> None:
    """SQLite indexes new messages in batches (migration 0005). A message deleted before
    its batch must not be removed from the index, and once the newest indexed messages are
    deleted SQLite hands their rowids out again: those new messages are not indexed yet."""
    store = await _sqlite_store(tmp_path)
    try:
        await store.append_messages("c", _said("apple one", "apple two", "apple three"))
        assert [h.seq for h in await store.search("default", "apple")] != []  # caught up
        await store.delete_message("c", 3)  # the newest, indexed: its rowid is free again
        await store.delete_message("c", 2)
        await store.append_messages("c", _said("banana four", "cherry five"))
        await store.delete_message("c", 5)  # never indexed
        assert [h.seq for h in await store.search("default", "banana")] == [4]
        assert [h.seq for h in await store.search("default", "apple")] == [1]
        assert await store.search("default", "cherry") == []
        await _consistent(store)
    finally:
        await store.close()


async def test_new_messages_are_indexed_with_the_checkpoints_without_any_search(
    tmp_path: Path,
) -> None:
    store = await _sqlite_store(tmp_path)
    try:
        await store.append_messages("c", _said("kiwi"))
        assert await store.db.read(fulltext.behind)
        for _ in range(CHECKPOINT_EVERY):
            await store.update_chat("c", "default", {"title": "busy"})  # an inline write
        db = store.db
        assert isinstance(db, ThreadedSQLite)
        assert db._checkpoint is not None
        await db._checkpoint
        assert not await store.db.read(fulltext.behind)
        await _consistent(store)
    finally:
        await store.close()


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    from alembic import command
    from alembic.config import Config

    import chatsessions.migrations

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            cfg = Config()
            folder = Path(chatsessions.migrations.__file__).parent
            cfg.set_main_option("script_location", str(folder))
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)
    finally:
        engine.dispose()


async def test_the_batched_index_migrates_down_and_up_again(tmp_path: Path) -> None:
    store = await _sqlite_store(tmp_path)
    await store.append_messages("c", _said("plum one"))
    await store.close()
    url = store.url
    _migrate(url, "0004", down=True)  # per-insert triggers again, index rebuilt whole
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO messages (chat_id, seq, role, content, status, prompt_tokens, "
            "completion_tokens, created_at) VALUES ('c', 2, 'user', 'plum two', 'ok', 0, 0, "
            "'2026-01-01 00:00:00.000000')"))
        conn.execute(sa.text("UPDATE chats SET message_count = 2 WHERE id = 'c'"))
        hits = conn.execute(sa.text(
            "SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'plum'")).all()
    engine.dispose()
    assert len(hits) == 2
    await store.open()  # migrates to the newest revision again
    try:
        await store.append_messages("c", _said("plum three"))
        assert sorted(h.seq for h in await store.search("default", "plum")) == [1, 2, 3]
        await _consistent(store)
    finally:
        await store.close()


async def test_a_common_word_ranks_only_the_newest_matches(database_url: str) -> None:
    """The first page ranks the newest CANDIDATES matches, not every match: the best
    match of all, older than those, is not on it; the best of the newest comes first."""
    store = SQLStore(database_url)
    await store.open()
    try:
        await store.create_chat(Chat(id="c", system_prompt="", backend="openai", model="m"))
        texts = ["plum plum plum best of all"]
        texts += [f"plum number {n} and more words here" for n in range(fulltext.CANDIDATES)]
        texts += ["plum plum plum best of the newest", "plum last"]
        await store.append_messages("c", _said(*texts))
        hits = await store.search("default", "plum", limit=5)
        assert hits[0].seq == len(texts) - 1
        assert "[plum]" in hits[0].snippet
        assert 1 not in [h.seq for h in await store.search("default", "plum", limit=200)]
        assert [h.seq for h in await store.search("default", "all")] == [1]  # still found
    finally:
        await store.close()


async def test_titles_are_filtered_by_index_and_kept_in_step(database_url: str) -> None:
    store = SQLStore(database_url)
    await store.open()
    titles = {"a": "Refund for order 42", "b": 'The "quoted" REFUND', "c": None,
              "d": "Delivery", "e": "Über größe"}
    try:
        for chat_id, title in titles.items():
            await store.create_chat(Chat(id=chat_id, system_prompt="", title=title,
                                         backend="openai", model="m"))

        async def found(text: str) -> list[str]:
            return sorted(c.id for c in await store.list_chats("default",
                                                               title_contains=text))

        assert await found("refund") == ["a", "b"]
        assert await found('"quoted" r') == ["b"]
        assert await found("er") == ["a", "d", "e"]  # too short for trigrams: scanned
        assert await found("r 4") == ["a"]
        assert await found("über") == ["e"]
        assert await found("%") == []
        await store.update_chat("c", "default", {"title": "late refund"})
        await store.update_chat("a", "default", {"title": None})
        await store.delete_chat("b", "default")
        assert await found("refund") == ["c"]
    finally:
        await store.close()


@pytest.mark.parametrize(("few", "walk"), [(1, 3), (1, 100)])
async def test_titles_by_walk_or_by_index_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, few: int, walk: int,
) -> None:
    """A substring most titles share walks the chats and tests each title as the trigram
    tokenizer folds it (the Kelvin sign and the long s included); a short walk gives up
    and reads every match. Each way finds what the index finds, in the same order."""
    store = SQLStore(f"sqlite:///{tmp_path / 'titles.db'}")
    await store.open()
    titles = ["Refund 1", "refund 2", "REFUND 3", "\u212aiwi refund", "kiwi", "Über refund",
              "ſtop refund", "stop", None, "refunded", "re fund"]
    try:
        for n, title in enumerate(titles):
            await store.create_chat(Chat(id=f"c{n:02d}", system_prompt="", title=title,
                                         backend="openai", model="m"))

        async def found(text: str, limit: int) -> list[str]:
            return [c.id for c in await store.list_chats("default", limit=limit,
                                                         title_contains=text)]

        cases = [(text, limit) for text in ["refund", "kiwi", "stop", "über", "Fund", "zzz"]
                 for limit in (1, 2, 20)]
        by_index = {case: await found(*case) for case in cases}
        assert by_index["refund", 20] == ["c09", "c06", "c05", "c03", "c02", "c01", "c00"]
        assert by_index["kiwi", 20] == ["c04", "c03"]
        assert by_index["stop", 20] == ["c07", "c06"]
        monkeypatch.setattr(title_search, "FEW", few)
        monkeypatch.setattr(title_search, "WALK", walk)
        assert {case: await found(*case) for case in cases} == by_index
    finally:
        await store.close()
