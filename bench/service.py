"""Target 4: turns per second over HTTP, chatsessions' service against a bare proxy.

Four uvicorn subprocesses run side by side: ``chatsessions serve`` on a SQLite file, the
same on PostgreSQL, and :mod:`bench.proxy_app`, a bare FastAPI endpoint that only
forwards the turn to the model, calling it with httpx2 like chatsessions' openai client
(the baseline of the target) and, reported only, with aiohttp. All call the same
zero-delay fake model, itself a fifth process.

The clients are ``CLIENT_PROCESSES`` worker processes sharing ``clients`` concurrent
tasks, each task owning one chat per server and sending its turns one after another (a
chat's turns are sequential by nature) on a keep-alive connection: one ``AsyncClient``
(httpx2, see :mod:`bench.servers`) per server and worker, its pool as large as the
worker's share of the tasks. One process was not enough: with httpx's own client, one
process saturated its core before the bare proxy did (the proxy's rate rose by about 40%
from one client process to two or four while chatsessions' did not move), and smaller
pools also keep the client's per-request cost down.

The servers run in lockstep: a round is ``turns`` turns on every chat of one server, and
the servers take rounds in turn, the first to go rotating. A server's rate is its turns
over the sum of its rounds' wall times. The CPU seconds of every process (client
workers, server, fake model) are read from /proc around each round, so the figures also
say where the CPU went.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable
from math import nan
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.harness import Ratio, median, user_text
from bench.servers import (
    Server,
    chatsessions_service,
    fake_model,
    httpx,
    proxy_service,
    running,
    self_cpu_s,
)

BASELINE = "baseline_proxy"
AIOHTTP_BASELINE = "baseline_proxy_aiohttp"
CLIENT_PROCESSES = 4
#: server CPU per turn, at most this many times the aiohttp proxy's
TARGET_CPU_VS_AIOHTTP = 1.5


class _Chats:
    """One worker's chats on one server, and what came back."""

    def __init__(self, url: str, indices: list[int]) -> None:
        # Idle connections closed before uvicorn's 5 s keep-alive timeout closes them.
        limits = httpx.Limits(max_connections=len(indices),
                              max_keepalive_connections=len(indices), keepalive_expiry=3)
        self.http = httpx.AsyncClient(base_url=url, limits=limits, timeout=60)
        self.indices = indices
        self.ids: list[str] = []
        self.answers: dict[int, list[str]] = {i: [] for i in indices}
        self.latencies: list[float] = []
        self.failures: dict[str, int] = {}

    async def new_chats(self) -> list[str]:
        async def one() -> str:
            response = await self.http.post("/chats", json={})
            response.raise_for_status()
            return str(response.json()["id"])

        return list(await asyncio.gather(*(one() for _ in self.indices)))

    async def open(self) -> None:
        """A warm-up turn on chats of its own (connections, imports, caches), then the
        chats that are measured."""
        warm = await self.new_chats()
        await asyncio.gather(*(self.turn(chat_id, "warm-up") for chat_id in warm))
        self.latencies.clear()
        self.failures.clear()
        self.ids = await self.new_chats()

    async def turn(self, chat_id: str, text: str) -> str | None:
        started = time.perf_counter()
        try:
            response = await self.http.post(f"/chats/{chat_id}/messages",
                                            json={"content": text})
        except httpx.TransportError as exc:
            self.failures[type(exc).__name__] = self.failures.get(type(exc).__name__, 0) + 1
            return None
        self.latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            kind = f"http_{response.status_code}"
            self.failures[kind] = self.failures.get(kind, 0) + 1
            return None
        return str(response.json()["content"])

    async def chat_turns(self, position: int, first: int, turns: int) -> None:
        index = self.indices[position]
        for turn in range(first, first + turns):
            answer = await self.turn(self.ids[position], user_text(index, turn))
            self.answers[index].append(answer or "")

    async def round(self, first: int, turns: int) -> None:
        await asyncio.gather(*(self.chat_turns(p, first, turns)
                               for p in range(len(self.indices))))


def _worker(conn: Connection, urls: dict[str, str], indices: list[int]) -> None:
    """A client process: opens its chats on every server, then runs the rounds it is told."""

    async def serve() -> None:
        sides = {name: _Chats(url, indices) for name, url in urls.items()}
        for side in sides.values():
            await side.open()
        conn.send("ready")
        while True:
            command = conn.recv()
            if command[0] != "round":
                break
            _, name, first, turns = command
            before = self_cpu_s()
            await sides[name].round(first, turns)
            conn.send(self_cpu_s() - before)
        conn.send({name: {"answers": s.answers, "latencies": s.latencies,
                          "failures": s.failures} for name, s in sides.items()})
        for side in sides.values():
            await side.http.aclose()

    asyncio.run(serve())


class _Clients:
    """The worker processes, driven from here in lockstep."""

    def __init__(self, urls: dict[str, str], clients: int) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited threads or loops
        count = min(CLIENT_PROCESSES, clients)
        self.pipes: list[Connection] = []
        self.procs = []
        for worker in range(count):
            ours, theirs = context.Pipe()
            indices = list(range(worker, clients, count))
            proc = context.Process(target=_worker, args=(theirs, urls, indices), daemon=True)
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)
        for pipe in self.pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a client worker did not start")

    def round(self, name: str, first: int, turns: int) -> float:
        for pipe in self.pipes:
            pipe.send(("round", name, first, turns))
        return float(sum(pipe.recv() for pipe in self.pipes))

    def finish(self) -> dict[str, dict[str, Any]]:
        for pipe in self.pipes:
            pipe.send(("stop",))
        parts = [pipe.recv() for pipe in self.pipes]
        for proc in self.procs:
            proc.join(timeout=30)
        merged: dict[str, dict[str, Any]] = {}
        for part in parts:
            for name, got in part.items():
                side = merged.setdefault(name, {"answers": {}, "latencies": [],
                                                "failures": {}})
                side["answers"].update(got["answers"])
                side["latencies"] += got["latencies"]
                for kind, n in got["failures"].items():
                    side["failures"][kind] = side["failures"].get(kind, 0) + n
        return merged

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join()


def _summary(rounds: dict[str, list[float]], got: dict[str, Any]) -> dict[str, Any]:
    answers = [got["answers"][i] for i in sorted(got["answers"])]
    sha = hashlib.sha256()
    for chat in answers:
        sha.update("\0".join(chat).encode() + b"\1")
    turns = sum(len(a) for a in answers)
    wall = sum(rounds["wall_s"])
    per_turn_ms = {key.replace("_s", "_ms_per_turn"): sum(v) / turns * 1e3
                   for key, v in rounds.items() if key != "wall_s"}
    busy = sum(sum(v) for k, v in rounds.items() if k != "wall_s")
    lat = sorted(got["latencies"])
    return {
        "turns": turns, "failures": sum(got["failures"].values()),
        "failure_kinds": got["failures"], "wall_s": wall, "turns_per_s": turns / wall,
        **per_turn_ms,
        "cpu_busy_share": busy / wall / len(os.sched_getaffinity(0)),
        "latency_median_ms": median(lat) * 1e3,
        "latency_p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else float("nan"),
        "answers_sha": [sha.hexdigest()[:16]],
        "rounds": {k: [round(x, 6) for x in v] for k, v in rounds.items()},
    }


def _drive(servers: dict[str, Server], model: Server, clients: int, rounds: int,
           turns: int) -> dict[str, dict[str, Any]]:
    names = list(servers)
    figures = {name: {"wall_s": [], "server_cpu_s": [], "model_cpu_s": [],
                      "client_cpu_s": []} for name in names}
    workers = _Clients({name: s.url for name, s in servers.items()}, clients)
    try:
        for index in range(rounds):
            shift = index % len(names)
            for name in [*names[shift:], *names[:shift]]:
                server, out = servers[name], figures[name]
                cpu = (server.cpu_s(), model.cpu_s())
                started = time.perf_counter()
                client_cpu = workers.round(name, index * turns, turns)
                out["wall_s"].append(time.perf_counter() - started)
                out["server_cpu_s"].append(server.cpu_s() - cpu[0])
                out["model_cpu_s"].append(model.cpu_s() - cpu[1])
                out["client_cpu_s"].append(client_cpu)
        got = workers.finish()
    finally:
        workers.kill()
    return {name: _summary(figures[name], got[name]) for name in names}


def run(workdir: Path, pg_url: str, clients: int, rounds: int, turns: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    log(f"service overhead: {clients} concurrent clients in {min(CLIENT_PROCESSES, clients)} "
        f"processes, {rounds} rounds of {turns} turns per chat, 4 servers in lockstep")
    model = fake_model(workdir)
    model_url = model.url + "/v1"
    servers = {
        "ours_sqlite": chatsessions_service("ours-sqlite", workdir,
                                            f"sqlite:///{workdir / 'service.db'}", model_url),
        "ours_postgresql": chatsessions_service("ours-pg", workdir, pg_url, model_url),
        BASELINE: proxy_service("baseline", workdir, model_url),
        AIOHTTP_BASELINE: proxy_service("baseline-aiohttp", workdir, model_url, "aiohttp"),
    }
    with running(model, *servers.values()):
        results = _drive(servers, model, clients, rounds, turns)

    def rate(name: str, baseline: str = BASELINE) -> float:
        return float(results[name]["turns_per_s"]) / float(results[baseline]["turns_per_s"])

    def server_cpu(name: str, baseline_name: str = BASELINE) -> float:
        baseline = float(results[baseline_name]["server_cpu_ms_per_turn"])
        # A quick run can be shorter than one tick of the processes' CPU clock.
        return float(results[name]["server_cpu_ms_per_turn"]) / baseline if baseline else nan

    ratios = [
        Ratio("service_sqlite_rate", rate("ours_sqlite"), 0.7, "higher",
              "turns/s over HTTP, chatsessions serve on SQLite / bare FastAPI proxy"),
        Ratio("service_postgresql_rate", rate("ours_postgresql"), None, "higher",
              "turns/s over HTTP, chatsessions serve on PostgreSQL / bare FastAPI proxy"),
        Ratio("service_sqlite_rate_vs_aiohttp_proxy", rate("ours_sqlite", AIOHTTP_BASELINE),
              None, "higher", "turns/s over HTTP, chatsessions serve on SQLite / the same "
              "proxy calling the model with aiohttp"),
        Ratio("service_sqlite_server_cpu", server_cpu("ours_sqlite"), None, "lower",
              "server CPU per turn, chatsessions serve on SQLite / bare FastAPI proxy"),
        Ratio("service_postgresql_server_cpu", server_cpu("ours_postgresql"), None, "lower",
              "server CPU per turn, chatsessions serve on PostgreSQL / bare FastAPI proxy"),
        Ratio("service_sqlite_server_cpu_vs_aiohttp_proxy",
              server_cpu("ours_sqlite", AIOHTTP_BASELINE), TARGET_CPU_VS_AIOHTTP, "lower",
              "server CPU per turn, chatsessions serve on SQLite / the bare FastAPI proxy "
              "calling the model with aiohttp"),
    ]
    return {
        "title": "Service overhead",
        "sizes": {"clients": clients, "client_processes": min(CLIENT_PROCESSES, clients),
                  "rounds": rounds, "turns_per_round": turns},
        "same_answers_on_every_side": len({r["answers_sha"][0] for r in results.values()}) == 1,
        "no_failures": all(r["failures"] == 0 for r in results.values()),
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }
