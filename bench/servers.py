"""HTTP servers as subprocesses for the service benchmarks, and what /proc says about them.

Each server is started with ``RLIMIT_NOFILE`` raised to the hard limit (a preexec_fn), its
output going to a log file, and is stopped with SIGTERM. ``cpu_s`` and ``rss_bytes`` read
``/proc/PID/stat`` and ``/proc/PID/status``, so a benchmark can say where the CPU went and
how much memory a process holds, without a dependency.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import MODEL, SYSTEM_PROMPT

try:
    # The maintained fork of httpx that the openai client, so chatsessions, is built on.
    # httpx's own connection pool slows down sharply with many concurrent requests
    # (encode/httpx#3215): on the machine these benchmarks were written on, 64 requests at
    # once to the fake model got about 270 answers/s with a p99 of 1.3 s from httpx, and
    # 1,800/s with a p99 of 40 ms from httpx2.
    import httpx2 as httpx
except ImportError:  # an openai client built on httpx itself
    import httpx  # type: ignore[no-redef]

_TICKS = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; return the new limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size (``VmRSS``) of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def self_cpu_s() -> float:
    return cpu_s(os.getpid())


class Server:
    """One HTTP server subprocess on a free loopback port."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path,
                 port: int | None = None, health: str = "/healthz") -> None:
        self.name, self.argv, self.env, self.workdir = name, argv, env, workdir
        self.health = health
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, within: float = 60.0) -> Server:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.workdir, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
        deadline = time.monotonic() + within
        with httpx.Client(base_url=self.url, timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if http.get(self.health).status_code == 200:
                        return self
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer in {within}s:\n{self.log()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[tuple[Server, ...]]:
    """Start the servers (stopping those already started if one fails); stop them after."""
    started: list[Server] = []
    try:
        for server in servers:
            started.append(server)
            server.start()
        yield servers
    finally:
        for server in reversed(started):
            server.stop()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CHATSESSIONS_", "OPENAI_"))}


def fake_model(workdir: Path, delay: float = 0.0) -> Server:
    """``python -m chatsessions.testing`` (the fake model) with ``delay`` seconds per answer."""
    port = free_port()
    argv = [sys.executable, "-m", "chatsessions.testing", "--port", str(port),
            "--delay", str(delay)]
    return Server(f"fake-model-{delay:g}s", argv, _clean_env(), workdir, port, "/v1/models")


def chatsessions_service(name: str, workdir: Path, database_url: str, model_url: str,
                         **settings: object) -> Server:
    """``python -m chatsessions serve`` on the openai backend, pointed at the fake model, with
    the default settings otherwise (the model client retries, as deployed), but automatic
    titles off: the bare proxies it is compared with make no such extra model call."""
    env = _clean_env()
    env.update({
        "CHATSESSIONS_AUTO_TITLE": "false",
        "CHATSESSIONS_DATABASE_URL": database_url,
        "CHATSESSIONS_BACKEND": "openai",
        "CHATSESSIONS_MODEL": MODEL,
        "CHATSESSIONS_SYSTEM_PROMPT": SYSTEM_PROMPT,
        "OPENAI_BASE_URL": model_url,
        "OPENAI_API_KEY": "bench",
    })
    env.update({f"CHATSESSIONS_{k.upper()}": str(v) for k, v in settings.items()})
    port = free_port()
    argv = [sys.executable, "-m", "chatsessions", "serve", "--port", str(port)]
    return Server(name, argv, env, workdir, port)


def proxy_service(name: str, workdir: Path, model_url: str, client: str = "httpx") -> Server:
    """The bare FastAPI proxy of :mod:`bench.proxy_app`, run by uvicorn as ``serve`` runs;
    ``client`` (``httpx``, meaning :data:`httpx` here, or ``aiohttp``) calls the model."""
    env = _clean_env()
    env["BENCH_MODEL_URL"] = model_url
    env["BENCH_PROXY_CLIENT"] = client
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")) if p)
    port = free_port()
    argv = [sys.executable, "-m", "bench.proxy_app", "--port", str(port)]
    return Server(name, argv, env, workdir, port)
