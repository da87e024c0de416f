"""The router's choices as pure logic: homes on the ring, spread, bounded load, health."""

from __future__ import annotations

import math
import uuid
from collections import Counter

import pytest

from chatsessions.backends.routing import Router, ring_hash

URLS = [f"http://10.0.0.{i}:8000/v1/chat/completions" for i in (1, 2, 3)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keys(count: int) -> list[str]:
    return [str(uuid.UUID(int=ring_hash(f"chat {i}") << 64)) for i in range(count)]


def test_every_replica_gives_a_chat_the_same_home() -> None:
    first, second = Router(URLS), Router(list(URLS))
    homes = [first.home(key).url for key in keys(200)]
    assert homes == [second.home(key).url for key in keys(200)]
    assert len(set(homes)) == 3


def test_homes_spread_evenly_over_the_endpoints() -> None:
    router = Router(URLS)
    shares = Counter(router.home(key).url for key in keys(6000))
    assert set(shares) == set(URLS)
    for url in URLS:
        assert 0.25 < shares[url] / 6000 < 0.42, shares


def test_a_new_endpoint_takes_chats_only_from_the_others_never_moves_the_rest() -> None:
    before, after = Router(URLS), Router([*URLS, "http://10.0.0.4:8000/v1/chat/completions"])
    moved = [key for key in keys(4000) if before.home(key).url != after.home(key).url]
    assert all(after.home(key).url.startswith("http://10.0.0.4") for key in moved)
    assert 0.15 < len(moved) / 4000 < 0.35  # about a quarter: its fair share, no more


def test_a_walk_meets_every_endpoint_once_starting_at_home() -> None:
    router = Router(URLS)
    for key in keys(50):
        walk = router.walk(key)
        assert sorted(e.url for e in walk) == sorted(URLS)
        assert walk[0] is router.home(key)
        assert router.order(key) == walk  # idle and healthy: straight home


def test_a_full_home_passes_the_call_to_the_next_on_the_ring() -> None:
    router = Router(URLS)
    key = keys(1)[0]
    home, second, third = router.walk(key)
    home.in_flight = 3  # 3 in flight over 3: bound ceil(1.25 * 1) = 2, home holds more
    assert router.bound(router.endpoints) == 2
    assert router.order(key)[0] is second
    home.in_flight = second.in_flight = 6  # 12 in flight: bound 5, both hold more
    assert router.order(key)[0] is third
    home.in_flight = 5  # 11 in flight: bound ceil(4.58) = 5, home at the bound takes it
    assert router.order(key)[0] is home


def test_bounded_load_keeps_every_endpoint_within_the_bound_as_calls_pile_up() -> None:
    router = Router(URLS)
    hot = [key for key in keys(400) if router.home(key) is router.endpoints[0]][:60]
    for placed, key in enumerate(hot, start=1):
        chosen = router.order(key)[0]
        chosen.in_flight += 1
        assert max(e.in_flight for e in router.endpoints) <= math.ceil(1.25 * placed / 3) + 1
    assert router.endpoints[0].in_flight <= math.ceil(1.25 * 60 / 3) + 1
    assert router.endpoints[0].in_flight > 60 / 3  # yet more than its share: it is home


def test_an_unreachable_endpoint_rests_and_its_chats_go_home_after_the_cooldown() -> None:
    clock = Clock()
    router = Router(URLS, cooldown=5.0, clock=clock)
    key = keys(1)[0]
    home, second, _ = router.walk(key)
    router.failed(home, unreachable=True)
    assert router.order(key)[0] is second
    assert router.order(key)[-1] is home  # still tried when everything else fails
    clock.now += 4.9
    assert router.order(key)[0] is second
    clock.now += 0.2
    assert router.order(key)[0] is home
    router.succeeded(home)
    assert home.failures == 0


def test_server_errors_rest_an_endpoint_only_after_several_in_a_row() -> None:
    router = Router(URLS, failures_to_rest=3, clock=Clock())
    key = keys(1)[0]
    home = router.home(key)
    router.failed(home, unreachable=False)
    router.failed(home, unreachable=False)
    assert router.order(key)[0] is home
    router.succeeded(home)  # a success in between starts the count again
    for _ in range(2):
        router.failed(home, unreachable=False)
    assert router.order(key)[0] is home
    router.failed(home, unreachable=False)
    assert router.order(key)[0] is not home


def test_round_robin_ignores_the_chat_and_skips_resting_endpoints() -> None:
    router = Router(URLS, policy="round_robin", clock=Clock())
    key = keys(1)[0]
    assert [router.order(key)[0].url for _ in range(6)] == URLS * 2
    router.failed(router.endpoints[1], unreachable=True)
    assert [router.order(key)[0].url for _ in range(3)] == [URLS[0], URLS[2], URLS[0]]


@pytest.mark.parametrize(("urls", "why"), [([], "at least one"), ([URLS[0], URLS[0]], "twice")])
def test_an_empty_or_repeated_endpoint_list_is_refused(urls: list[str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Router(urls)


def test_endpoints_come_comma_separated_or_from_the_single_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatsessions import Settings

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("CHATSESSIONS_OPENAI_BASE_URLS", " http://a:1/v1 ,http://b:2/v1,")
    assert Settings().openai_endpoints == ["http://a:1/v1", "http://b:2/v1"]
    monkeypatch.delenv("CHATSESSIONS_OPENAI_BASE_URLS")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://one:3/v1")
    assert Settings().openai_endpoints == ["http://one:3/v1"]
    assert Settings(openai_base_urls=["http://x/v1"]).openai_endpoints == ["http://x/v1"]
    with pytest.raises(ValueError, match="twice"):
        Settings(openai_base_urls="http://x/v1,http://x/v1")
