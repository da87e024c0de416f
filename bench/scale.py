"""Target 5: many turns in flight at once on one service process, and memory per chat.

The model is the fake with a 1 s delay, in its own process. For each N of a ladder, a
fresh ``chatsessions serve`` (SQLite, one process, open-file limit raised to the hard
limit) gets N chats, created first at a concurrency of 64; then one turn on each of them
is sent at once, N requests in flight, each on a connection of its own (httpx2 clients of
``PER_CLIENT`` connections each: an httpx pool looks through all its connections for every
request, so one pool of 10,000 would make the client the bottleneck). The figure is the
wall time from the first request sent to the last answer received, over the model's 1 s.
The CPU seconds of the server, the model and this client are read from /proc, so the
figures say which process the time went to.

Memory is read as the service's ``VmRSS``: before creating the chats (after one warm-up
turn, so lazy imports are done), after creating them (idle chats: rows in the database,
nothing cached) and after one turn on each (cached chats: their histories in the
service's cache). A burst of N requests leaves its own garbage in the process (buffers
and objects of N connections that the allocator keeps), so the memory figures come from
a separate run on a fresh service where the turns go 64 at a time to a zero-delay model;
the RSS after each burst of the ladder is kept too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import Ratio, median, user_text
from bench.servers import (
    Server,
    chatsessions_service,
    fake_model,
    httpx,
    proxy_service,
    raise_nofile,
    running,
    self_cpu_s,
)

MODEL_DELAY_S = 1.0
TARGET_WALL_S = 3.0
#: wall time of the largest burst, at most this many times the aiohttp proxy's
TARGET_VS_AIOHTTP = 1.2
PER_CLIENT = 100  # connections per httpx client in a burst
SETUP_CONCURRENCY = 64  # creating chats, and the memory run's turns


def _limits(connections: int) -> httpx.Limits:
    # Idle connections are closed before uvicorn's 5 s keep-alive timeout closes them.
    return httpx.Limits(max_connections=connections, max_keepalive_connections=connections,
                        keepalive_expiry=3)


async def _bounded(count: int, concurrency: int, call: Callable[[int], Any]) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> Any:
        async with gate:
            return await call(index)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _warm(http: httpx.AsyncClient) -> None:
    """One chat and one turn: imports, connections and caches warm before measuring."""
    chat = (await http.post("/chats", json={})).json()["id"]
    (await http.post(f"/chats/{chat}/messages", json={"content": "warm-up"})).raise_for_status()


async def _create(http: httpx.AsyncClient, count: int) -> list[str]:
    async def one(_: int) -> str:
        response = await http.post("/chats", json={})
        response.raise_for_status()
        return str(response.json()["id"])

    return await _bounded(count, SETUP_CONCURRENCY, one)


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


async def _burst(server: Server, chats: list[str]) -> dict[str, Any]:
    """One turn on every chat, all sent at once; wall time, outcomes, latencies."""
    count = len(chats)
    clients = [httpx.AsyncClient(base_url=server.url, limits=_limits(PER_CLIENT), timeout=300)
               for _ in range(0, count, PER_CLIENT)]
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}  # the service's error messages, counted

    async def turn(index: int) -> None:
        sent = time.perf_counter()
        try:
            response = await clients[index // PER_CLIENT].post(
                f"/chats/{chats[index]}/messages", json={"content": user_text(index, 0)})
            outcome = "ok" if response.status_code == 200 else f"http_{response.status_code}"
            if outcome != "ok":
                message = f"{response.status_code} {_error_message(response)}"
                errors[message] = errors.get(message, 0) + 1
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        latencies.append(time.perf_counter() - sent)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(turn(i) for i in range(count)))
        wall = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    latencies.sort()
    return {"wall_s": wall, "succeeded": outcomes.get("ok", 0), "outcomes": outcomes,
            "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:10]),
            "latency_s": {"min": latencies[0], "median": median(latencies),
                          "p99": latencies[int(len(latencies) * 0.99)],
                          "max": latencies[-1]}}


async def _step(server: Server, model: Server, count: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, limits=_limits(SETUP_CONCURRENCY),
                                 timeout=120) as http:
        await _warm(http)
        rss = [server.rss_bytes()]
        started = time.perf_counter()
        chats = await _create(http, count)
        created_s = time.perf_counter() - started
        rss.append(server.rss_bytes())
    cpu = (server.cpu_s(), model.cpu_s(), self_cpu_s())
    burst = await _burst(server, chats)
    after = (server.cpu_s(), model.cpu_s(), self_cpu_s())
    rss.append(server.rss_bytes())
    spent = [b - a for a, b in zip(cpu, after, strict=True)]
    return {
        "chats": count, **burst, "create_s": created_s,
        "cpu_s": {"server": spent[0], "model": spent[1], "client": spent[2]},
        "server_cpu_ms_per_turn": spent[0] / count * 1e3,
        "rss_bytes": {"before": rss[0], "idle_chats": rss[1], "after_burst": rss[2]},
        "idle_bytes_per_chat": (rss[1] - rss[0]) / count,
        "after_burst_bytes_per_chat": (rss[2] - rss[1]) / count,
    }


async def _memory(server: Server, count: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, limits=_limits(SETUP_CONCURRENCY),
                                 timeout=120) as http:
        await _warm(http)
        rss = [server.rss_bytes()]
        chats = await _create(http, count)
        rss.append(server.rss_bytes())

        async def turn(index: int) -> None:
            response = await http.post(f"/chats/{chats[index]}/messages",
                                       json={"content": user_text(index, 0)})
            response.raise_for_status()

        await _bounded(count, SETUP_CONCURRENCY, turn)
        rss.append(server.rss_bytes())
    return {
        "chats": count,
        "rss_bytes": {"before": rss[0], "idle_chats": rss[1], "cached_chats": rss[2]},
        "idle_bytes_per_chat": (rss[1] - rss[0]) / count,
        "cached_bytes_per_chat": (rss[2] - rss[1]) / count,
    }


def run(workdir: Path, ladder: tuple[int, ...], memory_chats: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    nofile = raise_nofile()  # this client holds one socket per turn in flight
    log(f"scale: N turns in flight at once against a {MODEL_DELAY_S:g} s model, N in "
        f"{', '.join(map(str, ladder))}; memory with {memory_chats} chats")
    steps = []
    slow, instant = fake_model(workdir, MODEL_DELAY_S), fake_model(workdir, 0.0)
    with running(slow, instant):
        for count in ladder:
            db = f"sqlite:///{workdir / f'scale-{count}.db'}"
            with running(chatsessions_service(f"scale-{count}", workdir, db,
                                              slow.url + "/v1")) as (server,):
                steps.append(asyncio.run(_step(server, slow, count)))
            step = steps[-1]
            log(f"  N={count}: {step['succeeded']} ok in {step['wall_s']:.2f} s, server CPU "
                f"{step['server_cpu_ms_per_turn']:.1f} ms/turn")
        # What the same burst costs without chatsessions: the bare proxies of the service
        # benchmark, at the largest N (the client's own cost is in both).
        floor_n = ladder[-1]
        floors = {}
        for client in ("httpx", "aiohttp"):
            with running(proxy_service(f"scale-proxy-{client}", workdir, slow.url + "/v1",
                                       client)) as (server,):
                floors[client] = asyncio.run(_step(server, slow, floor_n))
            log(f"  bare proxy ({client}), N={floor_n}: {floors[client]['succeeded']} ok in "
                f"{floors[client]['wall_s']:.2f} s")
        db = f"sqlite:///{workdir / 'scale-memory.db'}"
        with running(chatsessions_service("scale-memory", workdir, db,
                                          instant.url + "/v1")) as (server,):
            memory = asyncio.run(_memory(server, memory_chats))
    largest = steps[-1]
    within = [s["chats"] for s in steps
              if s["succeeded"] == s["chats"] and s["wall_s"] <= TARGET_WALL_S]
    ratios = [
        Ratio("scale_wall_over_model_latency", largest["wall_s"] / MODEL_DELAY_S,
              TARGET_WALL_S / MODEL_DELAY_S, "lower",
              f"wall time of {largest['chats']} turns in flight at once "
              f"({largest['succeeded']} succeeded) / the model's {MODEL_DELAY_S:g} s latency"),
    ]
    ours_at_floor = next(s for s in steps if s["chats"] == floor_n)
    for client, floor in floors.items():
        ratios.append(Ratio(
            f"scale_wall_vs_proxy_{client}", ours_at_floor["wall_s"] / floor["wall_s"],
            TARGET_VS_AIOHTTP if client == "aiohttp" else None,
            "lower", f"wall time of {floor_n} turns in flight, chatsessions / the bare "
            f"FastAPI proxy calling the model with {client}"))
    return {
        "title": "Scale of concurrency",
        "sizes": {"ladder": list(ladder), "memory_chats": memory_chats,
                  "model_delay_s": MODEL_DELAY_S},
        "open_files_limit": nofile,
        "largest_n_within_target": max(within) if within else 0,
        "target_wall_s": TARGET_WALL_S,
        "steps": steps,
        "bare_proxy": {"chats": floor_n, **floors},
        "memory": memory,
        "results": {},
        "ratios": [r.as_dict() for r in ratios],
    }
