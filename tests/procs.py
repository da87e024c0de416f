"""Real service processes for the guarantee tests: `python -m chatsessions serve` started,
waited for, stopped, or killed with SIGKILL, and the figures those tests report."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

#: Append each test's figures (one JSON object a line) to this file when it is set.
FIGURES_ENV = "CHATSESSIONS_GUARANTEE_FIGURES"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(database_url: str, llm_base_url: str, replica_id: str,
                **settings: object) -> dict[str, str]:
    """The environment of one replica: the openai backend on the fake, no client retries
    unless asked, and ``settings`` as ``CHATSESSIONS_<NAME>`` variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHATSESSIONS_", "OPENAI_"))}
    env.update({
        "CHATSESSIONS_DATABASE_URL": database_url,
        "CHATSESSIONS_BACKEND": "openai",
        "CHATSESSIONS_MODEL": "fake-model",
        "OPENAI_BASE_URL": llm_base_url,
        "OPENAI_API_KEY": "x",
        "CHATSESSIONS_MAX_RETRIES": "0",
        "CHATSESSIONS_AUTO_TITLE": "0",
        "CHATSESSIONS_REPLICA_ID": replica_id,
    })
    env.update({f"CHATSESSIONS_{name.upper()}": str(value) for name, value in settings.items()})
    return env


class ServiceProcess:
    """One ``chatsessions serve`` subprocess on a free loopback port; its output goes to a
    log file (a pipe nobody reads would eventually block the server)."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str,
                 args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.args = args
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chatsessions", "serve", "--port", str(self.port),
                 *self.args],
                env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            )

    async def ready(self, within: float = 90.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer in {within}s:\n{self.log()}")
                await asyncio.sleep(0.05)

    async def start(self) -> ServiceProcess:
        self.spawn()
        await self.ready()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class Services:
    """Every process a test started, stopped at teardown whatever happened."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[ServiceProcess] = []

    def make(self, env: dict[str, str], name: str, args: tuple[str, ...] = ()) -> ServiceProcess:
        service = ServiceProcess(env, self.workdir, name, args)
        self.started.append(service)
        return service

    async def start(self, *pairs: tuple[dict[str, str], str]) -> list[ServiceProcess]:
        """Start several replicas at once (their start-up costs overlap)."""
        services = [self.make(env, name) for env, name in pairs]
        for service in services:
            service.spawn()
        await asyncio.gather(*(service.ready() for service in services))
        return services

    def stop_all(self) -> None:
        for service in self.started:
            service.stop()


def report(test: str, **figures: Any) -> None:
    """Print a test's figures (seen with ``pytest -s``) and keep them in the figures file."""
    line = json.dumps({"test": test, **figures}, sort_keys=True)
    print(f"\nfigures: {line}")
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
