"""Several real fake-model servers behind one openai backend: each chat keeps to its own
server, chats spread over all of them within the load bound, and a server that goes away
costs a turn nothing but its cache: the turn is answered by the next one, and the chat
goes home once its server is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chatsessions import AsyncChatSessions, BackendError
from chatsessions.backends.openai import OpenAIBackend
from chatsessions.testing import FakeLLMServer, Fault


@pytest.fixture
def fakes() -> Iterator[list[FakeLLMServer]]:
    servers = [FakeLLMServer().start() for _ in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
async def chats(tmp_path: Path, fakes: list[FakeLLMServer]) -> AsyncIterator[AsyncChatSessions]:
    async with AsyncChatSessions(
        database_url=f"sqlite:///{tmp_path / 'chats.db'}", backend="openai",
        model="fake-model", openai_base_urls=",".join(f.base_url for f in fakes),
        max_retries=1, request_timeout=10.0, endpoint_cooldown=1.0, auto_title=False,
    ) as sessions:
        yield sessions


def backend_of(chats: AsyncChatSessions) -> OpenAIBackend:
    backend = chats.get_backend()
    assert isinstance(backend, OpenAIBackend)
    return backend


def fake_at(fakes: list[FakeLLMServer], address: str) -> FakeLLMServer:
    return next(f for f in fakes if address.startswith(f.base_url + "/"))


def served(fake: FakeLLMServer, marker: str) -> int:
    """How many of the fake's requests end with a user message containing ``marker``."""
    return sum(1 for history in fake.chat_histories()
               if marker in str([m for m in history if m["role"] == "user"][-1]["content"]))


async def chat_homed_at(chats: AsyncChatSessions, address: str) -> str:
    router = backend_of(chats).router
    for _ in range(200):
        chat_id = await chats.create_chat()
        if router.home(chat_id).url == address:
            return chat_id
    raise AssertionError("no chat hashed to that endpoint")


async def test_a_chats_turns_all_go_to_its_home_server(
    chats: AsyncChatSessions, fakes: list[FakeLLMServer]
) -> None:
    router = backend_of(chats).router
    ids = [await chats.create_chat() for _ in range(12)]
    for turn in range(3):
        for n, chat_id in enumerate(ids):
            await chats.send_message(chat_id, f"chat-{n} turn {turn}")
    for n, chat_id in enumerate(ids):
        home = fake_at(fakes, router.home(chat_id).url)
        assert served(home, f"chat-{n} ") == 3
        assert all(served(f, f"chat-{n} ") == 0 for f in fakes if f is not home)


async def test_chats_spread_over_every_server_as_the_ring_says(
    chats: AsyncChatSessions, fakes: list[FakeLLMServer]
) -> None:
    router = backend_of(chats).router
    ids = [await chats.create_chat() for _ in range(90)]
    await asyncio.gather(*(chats.send_message(c, f"chat-{n} hello") for n, c in enumerate(ids)))
    counts = [len(f.requests) for f in fakes]
    assert sum(counts) == 90
    for fake, count in zip(fakes, counts, strict=True):
        assert 90 * 0.15 < count < 90 * 0.55, counts
        homed = sum(1 for n, c in enumerate(ids)
                    if fake_at(fakes, router.home(c).url) is fake and served(fake, f"chat-{n} "))
        # bounded load may have moved a few; most chats are where the ring put them
        assert homed >= count * 0.6, (homed, count)


def max_overlap(fake: FakeLLMServer, seconds: float) -> int:
    """The most requests the fake was answering at once (each takes ``seconds``)."""
    arrivals = sorted(r.at for r in fake.requests)
    return max((sum(1 for b in arrivals if a <= b < a + seconds) for a in arrivals), default=0)


async def test_a_hot_server_overflows_to_the_next_on_the_ring(
    chats: AsyncChatSessions, fakes: list[FakeLLMServer]
) -> None:
    router = backend_of(chats).router
    hot = router.endpoints[0]
    ids = [await chat_homed_at(chats, hot.url) for _ in range(12)]
    delay = 1.5  # long enough that all twelve are in flight together
    for fake in fakes:
        fake.delay = delay
    await asyncio.gather(*(chats.send_message(c, f"chat-{n} burst") for n, c in enumerate(ids)))
    home = fake_at(fakes, hot.url)
    assert max_overlap(home, delay) <= 6  # ceil(1.25 * 11 / 3) + the call placed
    moved = [n for n in range(12) if not served(home, f"chat-{n} ")]
    assert moved
    for n in moved:  # each to the next server on its own walk of the ring
        assert served(fake_at(fakes, router.walk(ids[n])[1].url), f"chat-{n} ") == 1
    for fake in fakes:
        fake.delay = 0.0
    for n, chat_id in enumerate(ids):  # the burst over, every chat is home again
        await chats.send_message(chat_id, f"chat-{n} calm")
        assert served(home, f"chat-{n} calm") == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_stopped_server_costs_the_turn_nothing_and_the_chat_returns_home(
    chats: AsyncChatSessions, fakes: list[FakeLLMServer], stream: bool
) -> None:
    router = backend_of(chats).router
    chat_id = await chats.create_chat()
    home_endpoint, next_endpoint, _ = router.walk(chat_id)
    home, neighbour = fake_at(fakes, home_endpoint.url), fake_at(fakes, next_endpoint.url)
    await chats.send_message(chat_id, "first at home")
    home.stop()

    async def turn(text: str) -> str:
        if not stream:
            return await chats.send_message(chat_id, text)
        parts = [d async for d in chats.stream_message(chat_id, text)]
        return "".join(p for p in parts if isinstance(p, str))

    answer = await turn("while home is down")
    assert answer == FakeLLMServer.answer_for(neighbour.chat_histories()[-1])
    assert served(neighbour, "while home is down") == 1
    history = [m.content for m in await chats.history(chat_id)]
    assert history[-2:] == ["while home is down", answer]

    home.start()  # the same port again
    deadline = time.monotonic() + 30
    while not home_endpoint.healthy(time.monotonic()):  # its cooldown runs out
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await turn("back home")
    await turn("still home")
    assert served(home, "back home") == 1
    assert served(home, "still home") == 1
    assert served(neighbour, "home") == 1  # only the turn it stood in for


async def test_a_server_error_hands_the_turn_on_but_a_bad_request_does_not(
    chats: AsyncChatSessions, fakes: list[FakeLLMServer]
) -> None:
    router = backend_of(chats).router
    chat_id = await chats.create_chat()
    home, neighbour = (fake_at(fakes, e.url) for e in router.walk(chat_id)[:2])
    home.inject(Fault.status(503))
    await chats.send_message(chat_id, "answered next door")
    assert served(neighbour, "answered next door") == 1
    home.inject(Fault.status(400))
    with pytest.raises(BackendError, match="400"):
        await chats.send_message(chat_id, "refused everywhere")
    assert all(served(f, "refused everywhere") == 0 for f in fakes if f is not home)


async def test_with_every_server_down_the_turn_fails_as_with_one(
    chats: AsyncChatSessions, fakes: list[FakeLLMServer]
) -> None:
    chat_id = await chats.create_chat()
    for fake in fakes:
        fake.stop()
    with pytest.raises(BackendError, match="cannot reach"):
        await chats.send_message(chat_id, "anyone?")
