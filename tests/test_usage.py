"""Usage and cost per tenant over a time range: library, HTTP API and CLI."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import import_module
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from chatsessions import AsyncChatSessions, InvalidInput
from chatsessions.config import Settings
from chatsessions.service import create_app
from chatsessions.store import usage
from chatsessions.store.schema import usage_counters
from chatsessions.store.sql import SQLStore
from chatsessions.testing import FakeLLMServer
from chatsessions.types import Chat, Message, Role, TurnStatus, utcnow
from tests.conftest import LiveServer
from tests.test_cli import cli_env, run
from tests.test_search import _migrate

_migration = import_module("chatsessions.migrations.versions.0012_usage_hours")


async def test_usage_per_model_with_cost_and_range(settings_kwargs: dict[str, object]) -> None:
    prices = {"fake-model": (1.0, 2.0)}
    async with AsyncChatSessions(**settings_kwargs, prices=prices) as chats:  # type: ignore[arg-type]
        first = await chats.create_chat()
        answers = [await chats.send(first, "Where is my parcel?"),
                   await chats.send(first, "And the invoice?")]
        other = await chats.create_chat(model="other-model")
        unpriced = await chats.send(other, "hello")
        await chats.fork_chat(first, up_to_seq=4)  # its copies were paid for once
        stranger = chats.for_tenant("someone-else")
        await stranger.send(await stranger.create_chat(), "not mine")

        report = await chats.usage()
        by_model = {m.model: m for m in report.models}
        assert set(by_model) == {"fake-model", "other-model"}
        fake = by_model["fake-model"]
        prompt = sum(a.prompt_tokens for a in answers)
        completion = sum(a.completion_tokens for a in answers)
        assert (fake.turns, fake.prompt_tokens, fake.completion_tokens) == (
            2, prompt, completion)
        assert fake.priced
        assert fake.cost == pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6)
        assert by_model["other-model"].turns == 1
        assert by_model["other-model"].prompt_tokens == unpriced.prompt_tokens
        assert (by_model["other-model"].cost, report.unpriced) == (0.0, ["other-model"])
        assert report.turns == 3
        assert report.cost == fake.cost

        assert (await chats.usage(start=utcnow())).models == []
        assert (await chats.usage(end=answers[1].created_at)).turns == 1
        window = await chats.usage(start=answers[1].created_at,
                                   end=unpriced.created_at + timedelta(seconds=1))
        assert window.turns == 2
        with pytest.raises(InvalidInput):
            await chats.usage(start=utcnow(), end=utcnow() - timedelta(days=1))


async def check_summaries_are_counted(chats: AsyncChatSessions) -> None:
    chat_id = await chats.create_chat("Be brief.", context_policy="summarize")
    for n in range(8):
        await chats.send(chat_id, f"question {n} " + "word " * 30)
    rows = (await chats.history(chat_id, include_failed=True))[1:]
    answers = [m for m in rows if m.role is Role.ASSISTANT]
    summaries = [m for m in rows if m.role is Role.SYSTEM and m.covers_seq is not None]
    assert summaries, "the chat outgrew its window"
    assert all(m.prompt_tokens and m.completion_tokens for m in summaries)
    fork = await chats.fork_chat(chat_id)  # its copies, summaries too, were paid for once
    copied = (await chats.history(fork, include_failed=True))[1:]
    assert [m.seq for m in copied if m.covers_seq is not None] == [m.seq for m in summaries]

    report = await chats.usage()
    (used,) = report.models
    paid = answers + summaries
    assert (used.turns, used.summaries) == (len(answers), len(summaries))
    assert (used.prompt_tokens, used.completion_tokens) == (
        sum(m.prompt_tokens for m in paid), sum(m.completion_tokens for m in paid))
    assert (report.turns, report.summaries) == (len(answers), len(summaries))
    # in a range, only the summaries written in it
    before = await chats.usage(end=summaries[0].created_at)
    assert before.summaries == 0
    assert before.turns == len([m for m in answers if m.seq < summaries[0].seq])


async def test_usage_counts_the_summaries_the_model_wrote(
    settings_kwargs: dict[str, object]
) -> None:
    """Summaries are model calls: their tokens count, their rows do not count as turns,
    and a fork's copies of them are not counted again."""
    small = {"context_window": 600, "max_output_tokens": 100}
    async with AsyncChatSessions(**settings_kwargs, **small) as chats:  # type: ignore[arg-type]
        await check_summaries_are_counted(chats)
    memory = {**settings_kwargs, **small, "database_url": "memory://"}
    async with AsyncChatSessions(**memory) as chats:  # type: ignore[arg-type]
        await check_summaries_are_counted(chats)


def test_prices_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSESSIONS_PRICES", '{"gpt-4o-mini": [0.15, 0.6]}')
    assert Settings().prices == {"gpt-4o-mini": (0.15, 0.6)}
    with pytest.raises(ValueError, match="non-negative"):
        Settings(prices={"m": (-1.0, 0.0)})


def test_usage_over_http(settings_kwargs: dict[str, object]) -> None:
    server = LiveServer(create_app(Settings(**settings_kwargs,  # type: ignore[arg-type]
                                            prices={"fake-model": (1.0, 2.0)}))).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            chat = client.post("/chats", json={}).json()["id"]
            answer = client.post(f"/chats/{chat}/messages", json={"content": "hi"}).json()
            body = client.get("/usage").json()
            assert body["models"] == [{
                "model": "fake-model", "turns": 1, "summaries": 0,
                "prompt_tokens": answer["prompt_tokens"],
                "completion_tokens": answer["completion_tokens"], "priced": True,
                "cost": pytest.approx((answer["prompt_tokens"]
                                       + 2 * answer["completion_tokens"]) / 1e6),
            }]
            assert (body["from"], body["to"], body["unpriced"], body["turns"]) == (
                None, None, [], 1)
            later = client.get("/usage", params={"from": answer["created_at"],
                                                 "to": "2999-01-01T00:00:00Z"}).json()
            assert later["turns"] == 1
            assert later["to"].startswith("2999-01-01T00:00:00")
            empty = client.get("/usage", params={"to": answer["created_at"]}).json()
            assert (empty["turns"], empty["models"]) == (0, [])
            bad = client.get("/usage", params={"from": "yesterday"})
            assert bad.status_code == 422
            assert bad.json()["error"]["type"]
            backwards = client.get("/usage", params={"from": "2030-01-01T00:00:00Z",
                                                     "to": "2020-01-01T00:00:00Z"})
            assert backwards.status_code == 422
            schema = client.get("/openapi.json").json()
            assert "UsagePublic" in schema["components"]["schemas"]
    finally:
        server.stop()


def test_usage_from_the_command_line(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    env = {**cli_env(tmp_path, fake_llm), "CHATSESSIONS_PRICES": '{"fake-model": [1, 2]}'}
    chat_id = run(env, "new").stdout.strip()
    assert run(env, "send", chat_id, "hello").returncode == 0
    shown = run(env, "usage", "--from", "2000-01-01")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "fake-model" in line)
    assert [cell.strip() for cell in row.split("│")[2:4]] == ["1", "0"]  # turns, summaries
    assert "no price" not in shown.stdout
    unpriced = {**env, "CHATSESSIONS_PRICES": "{}"}
    assert "no price for: fake-model" in run(unpriced, "usage").stdout
    assert run(env, "usage", "--to", "next week").returncode == 2


# The counters against the full scan ---------------------------------------------------

_BASE = datetime(2026, 1, 10, tzinfo=UTC)
_DAYS = 4


def _when(rng: random.Random) -> datetime:
    """A time in the history's days; one in eight exactly at a midnight, one in eight at
    the start of an hour."""
    if rng.random() < 0.125:
        return _BASE + timedelta(days=rng.randrange(_DAYS))
    if rng.random() < 0.125:
        return _BASE + timedelta(hours=rng.randrange(_DAYS * 24))
    return _BASE + timedelta(seconds=rng.uniform(0, _DAYS * 86400))


def _answer(rng: random.Random, chat_id: str, role: Role = Role.ASSISTANT,
            **fields: Any) -> Message:
    return Message(chat_id=chat_id, seq=0, role=role, content="answer",
                   model=rng.choice([None, "m1", "m3"]), prompt_tokens=rng.randrange(1, 500),
                   completion_tokens=rng.randrange(1, 200), created_at=_when(rng), **fields)


async def _random_history(store: SQLStore, rng: random.Random, steps: int) -> None:
    """Every write that changes what a report counts, in random order: turns (answered
    or failed), regenerations, summaries, conversation items, imports, forks, deletes
    of messages and chats, expiry, model changes; two tenants, several models."""
    chats: list[Chat] = []
    for step in range(steps):
        live = [c for c in chats if await store.get_chat(c.id, c.tenant_id)]
        action = rng.choice(["chat", "turn", "turn", "turn", "failed", "regenerate",
                             "summary", "item", "import", "fork", "delete_message",
                             "delete_chat", "expire", "model"])
        if action == "chat" or not live:
            chat = Chat(id=f"chat-{step}", system_prompt="", tenant_id=rng.choice("ab"),
                        backend="openai", model=rng.choice(["m1", "m2"]))
            await store.create_chat(chat)
            chats.append(chat)
            continue
        chat = rng.choice(live)
        rows = await store.messages(chat.id)
        answers = [m for m in rows if m.role is Role.ASSISTANT and m.status is TurnStatus.OK]
        counted = [m for m in rows if m.role is not Role.USER]
        if action in ("turn", "failed"):
            user = await store.add_user_message(chat.id, "question")
            if action == "turn":
                await store.complete_turn(user, _answer(rng, chat.id))
            else:
                partial = _answer(rng, chat.id, status=TurnStatus.FAILED)
                await store.fail_turn(user, "boom", partial)
        elif action == "regenerate" and answers:
            await store.replace_answer(answers[-1], _answer(rng, chat.id,
                                                            replaces_seq=answers[-1].seq))
        elif action == "summary" and rows:
            await store.append_messages(chat.id, [_answer(rng, chat.id, Role.SYSTEM,
                                                          covers_seq=rows[-1].seq)])
        elif action == "item":
            await store.append_messages(chat.id, [
                Message(chat.id, 0, Role.ASSISTANT, "item", created_at=_when(rng))])
        elif action == "import":
            copy = Chat(id=f"import-{step}", system_prompt="", tenant_id=chat.tenant_id,
                        backend="openai", model=chat.model, message_count=3)
            await store.import_chat(copy, [
                Message(copy.id, 1, Role.USER, "q", created_at=_when(rng)),
                replace(_answer(rng, copy.id), seq=2),
                replace(_answer(rng, copy.id, status=TurnStatus.REPLACED), seq=3)])
            chats.append(copy)
        elif action == "fork":
            source = await store.get_chat(chat.id, chat.tenant_id)
            assert source is not None
            fork = replace(source, id=f"fork-{step}", parent_id=source.id)
            chats.append(await store.fork_chat(fork, source.message_count))
        elif action == "delete_message" and counted:
            await store.delete_message(chat.id, rng.choice(counted).seq)
        elif action == "delete_chat":
            await store.delete_chat(chat.id, chat.tenant_id)
        elif action == "expire":
            await store.update_chat(chat.id, chat.tenant_id, {"expires_at": _BASE})
            await store.delete_expired(utcnow())
        elif action == "model":
            await store.update_chat(chat.id, chat.tenant_id,
                                    {"model": rng.choice(["m1", "m2", "m4"])})


def _ranges(rng: random.Random) -> list[tuple[datetime | None, datetime | None]]:
    ranges: list[tuple[datetime | None, datetime | None]] = [
        (None, None), (_BASE + timedelta(days=1), None), (None, _BASE + timedelta(days=2)),
        (_BASE + timedelta(days=1), _BASE + timedelta(days=1)),  # empty
        (_BASE - timedelta(days=3), _BASE + timedelta(days=9))]
    for _ in range(40):
        start, end = sorted([_when(rng), _when(rng)])
        ranges += [(start, end), (start, None), (None, end),
                   (start, start + timedelta(hours=rng.uniform(0, 30))),
                   (start, start + timedelta(minutes=rng.uniform(0, 150)))]
    return ranges


async def _check_against_the_scan(store: SQLStore, rng: random.Random) -> int:
    compared = 0
    for tenant in "ab":
        for start, end in _ranges(rng):
            counters = await store.usage(tenant, start, end)
            scanned = await store.db.read(
                lambda conn, s=start, e=end, t=tenant: usage.scan_report(conn, t, s, e))
            assert counters == scanned, (tenant, start, end)
            compared += bool(scanned)
    return compared


@pytest.mark.parametrize("seed", [1, 2])
async def test_usage_counters_equal_the_full_scan(database_url: str, seed: int) -> None:
    """Whatever the writes, a report from the counters (whole hours) and the edge hours'
    messages equals the report from every message, for any range, exactly."""
    rng = random.Random(seed)
    store = SQLStore(database_url)
    await store.open()
    try:
        await _random_history(store, rng, steps=120)
        assert await _check_against_the_scan(store, rng) > 50  # most ranges hold usage
        # the migration's backfill, from the messages alone, gives the same counters
        before = await store.db.read(lambda conn: sorted(conn.execute(
            sa.select(usage_counters)).all()))
        backfill = _migration.backfill(_migration.HOUR[store.dialect])
        await store.db.write(lambda conn: conn.execute(usage_counters.delete()))
        await store.db.write(lambda conn: conn.execute(sa.text(backfill)))
        after = await store.db.read(lambda conn: sorted(conn.execute(
            sa.select(usage_counters)).all()))
        nonzero = [row for row in before if row.turns or row.summaries]
        assert nonzero == after
        await _check_against_the_scan(store, rng)
        if store.dialect == "sqlite":  # per day and back: rebuilt from the messages
            await store.close()
            _migrate(store.url, "0011", down=True)
            await store.open()
            await _check_against_the_scan(store, rng)
    finally:
        await store.close()
