"""``chatsessions serve``: the HTTP service and web console."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from chatsessions import ChatSessions, Settings
from chatsessions.cli.common import console, err_console

app = typer.Typer()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keys_configured(settings: Settings) -> bool:
    """Whether the database the workers will use has an active key (opened with every
    setting they open it with)."""
    with ChatSessions(settings) as chats:
        return chats.keys.any_active()


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    insecure: Annotated[bool, typer.Option(
        help="allow a non-loopback address without API keys")] = False,
) -> None:
    """Run the HTTP API (docs at /docs) and the web console (at /)."""
    import uvicorn

    from chatsessions.service.protocol import http_protocol

    overrides = ctx.obj or {}
    # Workers read their settings from the environment: hand the CLI's options on.
    for name, value in overrides.items():
        os.environ[f"CHATSESSIONS_{name.upper()}"] = str(value)
    settings = Settings()
    if not is_loopback(host) and not insecure and not _keys_configured(settings):
        err_console.print(
            f"error: refusing to serve {host} without API keys (anyone could read every "
            "chat). Create one with 'chatsessions keys create --tenant NAME', or pass "
            "--insecure.", highlight=False, markup=False)
        raise typer.Exit(2)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    console.print(f"database: {settings.database_url}\nbackend: {settings.backend}", style="dim",
                  highlight=False)
    console.print(f"web console: {base}/\nAPI docs:    {base}/docs", highlight=False)
    with _shared_metrics(workers):
        uvicorn.run("chatsessions.service:app_from_env", factory=True, host=host, port=port,
                    workers=workers, log_level="info", proxy_headers=False,
                    http=http_protocol())


@contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """Several workers: a fresh directory for prometheus_client's multiprocess mode, set
    before they start (they read it as they import it) and removed once they are gone,
    so ``/metrics`` counts every worker's turns whichever answers the scrape. A directory
    the operator set already is theirs: used, kept."""
    if workers < 2 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="chatsessions-metrics-") as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
