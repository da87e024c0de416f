"""Which model endpoint answers a call: chat-affine consistent hashing with bounded load.

Model servers (vLLM, SGLang, llama.cpp) keep a prefix cache: a chat whose turns all land
on one server is only charged for its new tokens, while a chat spread over servers
re-reads its whole history on each. A balancer in front of them cannot tell chats apart;
we know the chat id of every call, so each chat gets a home on a hash ring (the same
home in every process and replica, since the ring depends only on the endpoint list).

Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018): an
endpoint holding more than ``ceil(c * average)`` calls in flight passes the new call to the
next endpoint on the ring, so one hot chat or an unlucky hash cannot pile calls onto a
server. An endpoint that refused a connection, or kept failing, rests for a cooldown and
its chats are served by the next endpoint; the ring itself never changes, so they go
home as soon as the cooldown is over. All pure logic: the backend does the I/O.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

#: Ring positions per endpoint: enough that three endpoints get shares within a few percent.
VIRTUAL_NODES = 160
#: How far above the average load an endpoint may go before its calls overflow (the paper's c).
LOAD_FACTOR = 1.25

Policy = Literal["affinity", "round_robin"]


def ring_hash(text: str) -> int:
    """A hash stable across processes and runs (unlike ``hash``), so replicas agree."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(eq=False)  # endpoints are told apart by identity
class Endpoint:
    """One model server as the router sees it: its load now and its health."""

    url: str
    in_flight: int = 0
    failures: int = 0
    resting_until: float = 0.0

    def healthy(self, now: float) -> bool:
        return now >= self.resting_until


class Router:
    """Orders the endpoints for one call: the first is tried first, the rest in turn."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        policy: Policy = "affinity",
        load_factor: float = LOAD_FACTOR,
        failures_to_rest: int = 5,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("need at least one endpoint")
        if len(set(urls)) != len(urls):
            raise ValueError("the same endpoint is listed twice")
        if load_factor < 1.0:
            raise ValueError("load_factor must be >= 1")
        self.endpoints = [Endpoint(url) for url in urls]
        self.policy = policy
        self.load_factor = load_factor
        self.failures_to_rest = failures_to_rest
        self.cooldown = cooldown
        self._clock = clock
        self._turns = itertools.count()
        points = sorted((ring_hash(f"{url}#{i}"), index)
                        for index, url in enumerate(urls) for i in range(VIRTUAL_NODES))
        self._positions = [point for point, _ in points]
        # For each ring position, every endpoint in the order met walking on from there:
        # a call's whole fallback order is one lookup.
        owners = [index for _, index in points]
        self._walks = [_distinct_from(owners, start, len(urls)) for start in range(len(owners))]

    def walk(self, key: str) -> list[Endpoint]:
        """Every endpoint in the order the key's walk of the ring meets them: the first is
        the chat's home, the next takes its calls when the home is full or resting."""
        return [self.endpoints[i] for i in self._walk(key)]

    def home(self, key: str) -> Endpoint:
        """Where a chat lives when every endpoint is healthy and none is overloaded."""
        return self.endpoints[self._walk(key)[0]]

    def order(self, key: str | None) -> list[Endpoint]:
        """Every endpoint, best first: healthy ones before resting ones, and among the
        healthy ones the first on the key's walk of the ring that is within its load bound
        (affinity), or the next in rotation (round robin; also for calls without a key)."""
        now = self._clock()
        if self.policy == "round_robin" or key is None:
            healthy = [e for e in self.endpoints if e.healthy(now)]
            if healthy:
                start = next(self._turns) % len(healthy)
                healthy = healthy[start:] + healthy[:start]
            return healthy + [e for e in self.endpoints if not e.healthy(now)]
        walk = [self.endpoints[i] for i in self._walk(key)]
        healthy = [e for e in walk if e.healthy(now)]
        resting = [e for e in walk if not e.healthy(now)]
        if len(healthy) > 1:
            bound = self.bound(healthy)
            within = next((e for e in healthy if e.in_flight <= bound), healthy[0])
            healthy.remove(within)
            healthy.insert(0, within)
        return healthy + resting

    def bound(self, endpoints: Sequence[Endpoint]) -> int:
        """The most calls an endpoint may hold and still take one more:
        ``ceil(c * average calls in flight)``; one holding more passes the call on."""
        total = sum(e.in_flight for e in endpoints)
        return math.ceil(self.load_factor * total / len(endpoints))

    def succeeded(self, endpoint: Endpoint) -> None:
        endpoint.failures = 0
        endpoint.resting_until = 0.0

    def failed(self, endpoint: Endpoint, *, unreachable: bool) -> None:
        """An unreachable endpoint rests at once (trying it again costs every call a
        refused connection); one that answers with errors rests after several in a row."""
        endpoint.failures += 1
        if unreachable or endpoint.failures >= self.failures_to_rest:
            endpoint.resting_until = self._clock() + self.cooldown

    def _walk(self, key: str) -> tuple[int, ...]:
        at = bisect.bisect(self._positions, ring_hash(key)) % len(self._positions)
        return self._walks[at]


def _distinct_from(owners: Sequence[int], start: int, count: int) -> tuple[int, ...]:
    seen: list[int] = []
    for offset in range(len(owners)):
        owner = owners[(start + offset) % len(owners)]
        if owner not in seen:
            seen.append(owner)
            if len(seen) == count:
                break
    return tuple(seen)
