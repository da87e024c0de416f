"""The command line through a real subprocess (and typer's runner for the REPL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatsessions.prompts import DEMO_CHATS
from chatsessions.testing import FakeLLMServer


def cli_env(tmp_path: Path, fake_llm: FakeLLMServer) -> dict[str, str]:
    """The environment the command line runs in: a SQLite file and the fake model."""
    return {
        **os.environ,
        "CHATSESSIONS_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "CHATSESSIONS_BACKEND": "openai",
        "CHATSESSIONS_MODEL": "fake-model",
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_API_KEY": "test",
        "COLUMNS": "200",
        # Titles are extra model calls in the background: tests that want them say so.
        "CHATSESSIONS_AUTO_TITLE": "0",
    }


@pytest.fixture
def env(tmp_path: Path, fake_llm: FakeLLMServer) -> dict[str, str]:
    return cli_env(tmp_path, fake_llm)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatsessions", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_demo_runs_the_tutorial(env: dict[str, str], fake_llm: FakeLLMServer) -> None:
    result = run(env, "demo")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("Chat ")]
    histories = fake_llm.chat_histories()
    assert lines == [
        f"Chat 1, First Message: {FakeLLMServer.answer_for(histories[0])}",
        f"Chat 1, Follow-up Message: {FakeLLMServer.answer_for(histories[1])}",
        f"Chat 2, First Message: {FakeLLMServer.answer_for(histories[2])}",
        f"Chat 2, Follow-up Message: {FakeLLMServer.answer_for(histories[3])}",
    ]
    assert histories[1][1]["content"] == DEMO_CHATS[0][0]
    assert histories[3][1]["content"] == DEMO_CHATS[1][0]


def test_new_send_show_export_rm(env: dict[str, str], fake_llm: FakeLLMServer) -> None:
    created = run(env, "new", "--title", "order help")
    assert created.returncode == 0, created.stderr
    chat_id = created.stdout.strip()

    sent = run(env, "send", chat_id, "Where is my parcel?")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    streamed = run(env, "send", "--stream", chat_id, "And now?")
    assert streamed.stdout.strip() == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])

    shown = run(env, "show", chat_id)
    assert "user: Where is my parcel?" in shown.stdout
    assert f"assistant: {sent.stdout.strip()}" in shown.stdout

    listed = run(env, "list")
    assert chat_id in listed.stdout
    assert "order help" in listed.stdout

    exported = json.loads(run(env, "export", chat_id, "--format", "json").stdout)
    assert exported["chat"]["id"] == chat_id
    assert [m["content"] for m in exported["messages"]][:2] == [
        "Where is my parcel?", sent.stdout.strip()]
    markdown = run(env, "export", chat_id, "-f", "markdown").stdout
    assert "# order help" in markdown
    assert "## User" in markdown

    assert run(env, "rm", chat_id).returncode == 0
    gone = run(env, "show", chat_id)
    assert gone.returncode == 3
    assert gone.stderr.strip() == f"error: Chat session not found! ({chat_id})"


def test_errors_are_one_line_with_exit_codes(env: dict[str, str]) -> None:
    chat_id = run(env, "new").stdout.strip()
    empty = run(env, "send", chat_id, "   ")
    assert empty.returncode == 4
    assert empty.stderr.strip() == "error: message is empty"
    bad_format = run(env, "export", chat_id, "--format", "pdf")
    assert bad_format.returncode == 2
    assert "json, markdown" in bad_format.stderr
    assert "Traceback" not in empty.stderr + bad_format.stderr


def test_backend_failure_exit_code(env: dict[str, str], fake_llm: FakeLLMServer) -> None:
    from chatsessions.testing import Fault

    chat_id = run(env, "new").stdout.strip()
    fake_llm.inject(Fault.status(500), times=10)
    failed = run(env, "send", chat_id, "hello")
    assert failed.returncode == 5
    assert failed.stderr.startswith("error: the model backend answered 500")
    assert "(failed" in run(env, "show", chat_id).stdout


def test_interactive_chat_switches_and_streams(
    env: dict[str, str], fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatsessions.cli import app

    for key in ("CHATSESSIONS_DATABASE_URL", "CHATSESSIONS_BACKEND", "CHATSESSIONS_MODEL",
                "OPENAI_BASE_URL", "OPENAI_API_KEY", "CHATSESSIONS_AUTO_TITLE"):
        monkeypatch.setenv(key, env[key])
    script = "hello one\n/new Be brief.\nhello two\n/list\n/history\n/switch nope\n/quit\n"
    result = CliRunner().invoke(app, ["chat"], input=script)
    assert result.exit_code == 0, result.output
    histories = fake_llm.chat_histories()
    assert [h[-1]["content"] for h in histories] == ["hello one", "hello two"]
    assert histories[1][0]["content"] == "Be brief."
    assert FakeLLMServer.answer_for(histories[1]) in result.output
    assert "Chat session not found! (nope)" in result.output


def test_keys_create_list_revoke(env: dict[str, str]) -> None:
    created = run(env, "keys", "create", "--tenant", "acme", "--name", "ci")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("cs_")
    assert len(secret) > 30
    listed = run(env, "keys", "list")
    assert "acme" in listed.stdout
    assert secret not in listed.stdout
    key_id = next(line.split()[1] for line in listed.stdout.splitlines() if "acme" in line)
    assert run(env, "keys", "revoke", key_id).returncode == 0
    again = run(env, "keys", "revoke", key_id)
    assert again.returncode == 4
    assert "no active key" in again.stderr


def test_serve_refuses_public_address_without_keys(env: dict[str, str]) -> None:
    result = run(env, "serve", "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2
    assert "without API keys" in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _serve(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    """``chatsessions serve ARGS`` in a subprocess, once it answers /healthz: (process,
    its base address)."""
    import time

    import httpx

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "chatsessions", "serve", "--port", str(port), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            health = httpx.get(f"{base}/healthz")
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, err = process.communicate(timeout=30)
                raise AssertionError(f"serve did not start: {err}") from None
            time.sleep(0.1)
    assert health.json()["status"] == "ok"
    return process, base


def test_serve_answers_http(env: dict[str, str], fake_llm: FakeLLMServer) -> None:
    import httpx

    process, base = _serve(env)
    try:
        chat = httpx.post(f"{base}/chats", json={}).json()
        answer = httpx.post(f"{base}/chats/{chat['id']}/messages",
                            json={"content": "hello"}, timeout=30).json()
        assert answer["content"] == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
        assert "<html" in httpx.get(f"{base}/").text.lower()
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert f"{base}/docs" in out


def test_serve_binds_a_public_address_once_a_key_exists(env: dict[str, str]) -> None:
    import httpx

    created = run(env, "keys", "create", "--tenant", "acme")
    assert created.returncode == 0, created.stderr
    process, base = _serve({**env, "CHATSESSIONS_SQLITE_SYNCHRONOUS": "FULL"},
                           "--host", "0.0.0.0")
    try:
        assert httpx.get(f"{base}/chats").status_code == 401
        secret = created.stdout.strip()
        assert httpx.get(f"{base}/chats", headers={"Authorization": f"Bearer {secret}"}
                         ).status_code == 200
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_show_and_export_print_tool_calls_and_outputs(
    env: dict[str, str], fake_llm: FakeLLMServer
) -> None:
    from chatsessions import ChatSessions

    order = {"name": "order_status", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"]}}
    with ChatSessions(database_url=env["CHATSESSIONS_DATABASE_URL"], backend="openai",
                      model="fake-model", openai_base_url=fake_llm.base_url,
                      openai_api_key="test", auto_title=False) as chats:
        chat_id = chats.create_chat("S", tools=[order])
        (call,) = chats.send(chat_id, "Where is order 1234?").tool_calls or ()
        answer = chats.send_tool_results(chat_id, {call.id: "1234: shipped Tuesday"})

    shown = run(env, "show", chat_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = lines.index(f"  calls order_status({call.arguments}) [{call.id}]")
    assert lines[at - 1] == "assistant: "
    assert lines[at + 1] == f"tool (output of {call.id}): 1234: shipped Tuesday"
    assert lines[at + 2] == f"assistant: {answer.content}"

    markdown = run(env, "export", chat_id, "--format", "markdown").stdout
    assert f"**Tool call** `order_status` (`{call.id}`)" in markdown
    assert call.arguments in markdown
    assert f"## Tool (output of `{call.id}`)\n\n1234: shipped Tuesday" in markdown
    assert "- tools: `order_status`" in markdown
    assert markdown.index("**Tool call**") < markdown.index("## Tool (output") < \
        markdown.rindex(answer.content)
