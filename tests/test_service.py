"""The HTTP service, end to end: httpx against a live uvicorn, on SQLite and PostgreSQL."""

from __future__ import annotations

import gc

import httpx
import pytest

from chatsessions import DEFAULT_SYSTEM_PROMPT
from chatsessions.prompts import DEMO_CHATS
from chatsessions.testing import FakeLLMServer, Fault
from tests.conftest import LiveServer, sse_events


def test_full_chat_lifecycle(http: httpx.Client, fake_llm: FakeLLMServer) -> None:
    created = http.post("/chats", json={"title": "order", "metadata": {"shop": "eu"},
                                          "params": {"temperature": 0.1}})
    assert created.status_code == 201
    chat = created.json()
    assert chat["system_prompt"] == DEFAULT_SYSTEM_PROMPT
    assert (chat["title"], chat["metadata"], chat["params"]) == (
        "order", {"shop": "eu"}, {"temperature": 0.1})

    first, follow = DEMO_CHATS[0]
    answer = http.post(f"/chats/{chat['id']}/messages", json={"content": first})
    assert answer.status_code == 200
    body = answer.json()
    assert body["role"] == "assistant"
    assert body["content"] == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert body["usage"]["total_tokens"] == body["prompt_tokens"] + body["completion_tokens"] > 0
    http.post(f"/chats/{chat['id']}/messages", json={"content": follow})
    assert fake_llm.chat_histories()[-1][1:] == [
        {"role": "user", "content": first},
        {"role": "assistant", "content": body["content"]},
        {"role": "user", "content": follow},
    ]

    got = http.get(f"/chats/{chat['id']}").json()
    assert got["message_count"] == 4
    messages = http.get(f"/chats/{chat['id']}/messages").json()
    assert [m["content"] for m in messages["data"]][:2] == [first, body["content"]]
    assert messages["next_after"] is None
    page = http.get(f"/chats/{chat['id']}/messages", params={"limit": 3}).json()
    rest = http.get(f"/chats/{chat['id']}/messages",
                      params={"after": page["next_after"]}).json()
    assert [m["seq"] for m in page["data"] + rest["data"]] == [1, 2, 3, 4]

    patched = http.patch(f"/chats/{chat['id']}", json={"title": "renamed",
                                                         "system_prompt": "Be brief."})
    assert (patched.json()["title"], patched.json()["system_prompt"]) == ("renamed", "Be brief.")

    exported = http.get(f"/chats/{chat['id']}/export").json()
    assert exported["chat"]["id"] == chat["id"]
    assert [m["seq"] for m in exported["messages"]] == [1, 2, 3, 4]  # prompt: on the chat
    markdown = http.get(f"/chats/{chat['id']}/export", params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "# renamed" in markdown.text

    assert http.delete(f"/chats/{chat['id']}").status_code == 204
    assert http.get(f"/chats/{chat['id']}").status_code == 404


def test_list_paging_and_filters(http: httpx.Client) -> None:
    ids = [http.post("/chats", json={"title": f"t{n}", "metadata": {"n": n}}).json()["id"]
           for n in range(5)]
    first = http.get("/chats", params={"limit": 2}).json()
    second = http.get("/chats", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = http.get("/chats", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    seen = [c["id"] for c in first["data"] + second["data"] + third["data"]]
    assert seen == ids[::-1]
    assert third["next_cursor"] is None
    assert [c["id"] for c in http.get("/chats", params={"metadata.n": "2"}).json()["data"]] == [
        ids[2]]
    assert [c["id"] for c in http.get("/chats", params={"title": "t4"}).json()["data"]] == [
        ids[4]]
    bad = http.get("/chats", params={"cursor": "garbage!"})
    assert bad.status_code == 422


@pytest.mark.parametrize("how", ["flag", "accept"])
def test_streaming_sse(http: httpx.Client, fake_llm: FakeLLMServer, how: str) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    if how == "flag":
        response = http.post(f"/chats/{chat_id}/messages",
                               json={"content": "stream it please", "stream": True})
    else:
        response = http.post(f"/chats/{chat_id}/messages", json={"content": "stream it please"},
                               headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done"
    assert set(kinds[:-1]) == {"delta"}
    assert len(kinds) > 2
    text = "".join(str(data["content"]) for kind, data in events if kind == "delta")
    done = events[-1][1]
    assert done["content"] == text == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert done["seq"] == 2
    assert done["completion_tokens"] > 0  # type: ignore[operator]


def test_stream_cut_midway_sends_an_error_event(
    http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    fake_llm.inject(Fault.cut_stream(2))
    response = http.post(f"/chats/{chat_id}/messages",
                           json={"content": "a long story please", "stream": True})
    events = sse_events(response)
    assert [kind for kind, _ in events][:2] == ["delta", "delta"]
    kind, data = events[-1]
    assert kind == "error"
    assert data["error"]["type"] == "backend_error"  # type: ignore[index]
    stored = http.get(f"/chats/{chat_id}/messages").json()["data"]
    assert [(m["role"], m["status"]) for m in stored] == [("user", "failed"),
                                                           ("assistant", "failed")]
    assert http.post(f"/chats/{chat_id}/messages", json={"content": "again"}).status_code == 200


def test_client_disconnect_mid_stream_does_not_leave_turn_pending(
    live_server: LiveServer, fake_llm: FakeLLMServer
) -> None:
    import time

    fake_llm.delay = 0.0
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        chat_id = http.post("/chats", json={}).json()["id"]
        with http.stream("POST", f"/chats/{chat_id}/messages",
                         json={"content": "one two three four five six seven", "stream": True},
                         ) as response:
            next(response.iter_raw())
        # the connection is closed here, mid-stream
        deadline = time.monotonic() + 10
        while True:
            rows = http.get(f"/chats/{chat_id}/messages").json()["data"]
            if rows and rows[0]["status"] != "pending":
                break
            assert time.monotonic() < deadline, "turn stayed pending"
            time.sleep(0.05)
        assert http.post(f"/chats/{chat_id}/messages", json={"content": "x"}).status_code == 200


@pytest.mark.parametrize(
    ("fault", "status", "kind"),
    [(Fault.status(500), 502, "backend_error"), (Fault.status(429), 502, "backend_error"),
     (Fault.timeout(6), 504, "backend_timeout")],
)
def test_backend_failures_are_5xx_and_keep_the_message(
    http: httpx.Client, fake_llm: FakeLLMServer, fault: Fault, status: int, kind: str
) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    fake_llm.inject(fault)
    response = http.post(f"/chats/{chat_id}/messages", json={"content": "will it fail?"})
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind
    stored = http.get(f"/chats/{chat_id}/messages").json()["data"]
    assert [(m["content"], m["status"]) for m in stored] == [("will it fail?", "failed")]
    assert http.post(f"/chats/{chat_id}/messages", json={"content": "retry"}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "kind", "needle"),
    [
        ("get", "/chats/nope", {}, 404, "not_found", "nope"),
        ("post", "/chats/nope/messages", {"json": {"content": "hi"}}, 404, "not_found", "nope"),
        ("get", "/chats/nope/messages", {}, 404, "not_found", "nope"),
        ("get", "/chats/nope/export", {}, 404, "not_found", "nope"),
        ("delete", "/chats/nope", {}, 404, "not_found", "nope"),
        ("patch", "/chats/nope", {"json": {"title": "x"}}, 404, "not_found", "nope"),
        ("post", "/chats", {"content": b"{not json", "headers": {"content-type":
                                                                   "application/json"}},
         400, "invalid_json", "malformed JSON"),
        ("post", "/chats", {"json": {"params": {"temperature": 5}}}, 422, "invalid_request",
         "params.temperature"),
        ("post", "/chats", {"json": {"unknown": 1}}, 422, "invalid_request", "unknown"),
        ("post", "/chats", {"json": {"system_prompt": 12}}, 422, "invalid_request",
         "system_prompt"),
        ("get", "/chats", {"params": {"limit": 0}}, 422, "invalid_request", "limit"),
        ("get", "/nowhere", {}, 404, "not_found", "Not Found"),
        ("put", "/chats", {}, 405, "method_not_allowed", "Method Not Allowed"),
    ],
)
def test_error_statuses(
    http: httpx.Client, method: str, path: str, kwargs: dict[str, object], status: int,
    kind: str, needle: str,
) -> None:
    response = http.request(method.upper(), path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == kind
    assert needle in error["message"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [("", 422, "empty"), ("   ", 422, "empty"), ("x" * 40_000, 422, "at most 32000"),
     ("a\x00b", 422, "NUL"), (123, 422, "content"), ("x" * 33_000, 422, "32000")],
)
def test_bad_message_content(
    http: httpx.Client, fake_llm: FakeLLMServer, content: object, status: int, needle: str
) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    response = http.post(f"/chats/{chat_id}/messages", json={"content": content})
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]
    assert fake_llm.requests == []
    assert http.get(f"/chats/{chat_id}").json()["message_count"] == 0


def test_wrong_role_and_extra_fields_are_refused(http: httpx.Client) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    response = http.post(f"/chats/{chat_id}/messages",
                           json={"content": "hi", "role": "system"})
    assert response.status_code == 422
    assert "role" in response.json()["error"]["message"]


def test_oversized_body_is_413(http: httpx.Client) -> None:
    response = http.post("/chats", json={"system_prompt": "x" * 2_000_000})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


def test_health_metrics_and_openapi(http: httpx.Client, fake_llm: FakeLLMServer) -> None:
    assert http.get("/healthz").json() == {"status": "ok", "database": "ok"}
    chat_id = http.post("/chats", json={}).json()["id"]
    http.post(f"/chats/{chat_id}/messages", json={"content": "count me"})
    fake_llm.inject(Fault.status(500))
    http.post(f"/chats/{chat_id}/messages", json={"content": "fail me"})
    metrics = http.get("/metrics").text
    assert 'chatsessions_turns_total{status="ok"} 1.0' in metrics
    assert 'chatsessions_turns_total{status="failed"} 1.0' in metrics
    assert "chatsessions_turn_latency_seconds_bucket" in metrics
    assert 'chatsessions_tokens_total{kind="completion"}' in metrics
    schema = http.get("/openapi.json").json()
    names = set(schema["components"]["schemas"])
    assert {"ChatCreate", "ChatUpdate", "ChatPublic", "ChatList", "MessageCreate",
            "MessagePublic", "MessageList", "ErrorBody"} <= names


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/chats", b'{"system_prompt": "\\ud83d"}', 422, "unicode string"),
        ("/chats", b'{"metadata": {"a": "x\\u0000y"}}', 422, "NUL"),
        ("/chats", b'{"metadata": {"\\u0000": 1}}', 422, "NUL"),
        ("/chats", b'{"title": "a\\u0007b"}', 422, "control characters"),
        ("/chats", b'{"metadata": {"n": 1e400}}', 422, "plain JSON"),
        ("/chats", b'{"metadata": ' + b'{"a":' * 20 + b"1" + b"}" * 20 + b"}", 422, "metadata.a"),
        ("/chats", b'{"metadata": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", 400,
         "error parsing the body"),
        ("/chats", b'{"title": "\xff"}', 400, "error parsing the body"),
        ("/chats", b"\xff\xfe{}", 400, "malformed JSON"),
        ("/chats", b"[1, 2]", 422, "object"),
        ("/chats", b'{"params": {"max_tokens": 99999999999999999999}}', 422, "max_tokens"),
    ],
)
def test_hostile_input_is_a_clear_4xx(
    http: httpx.Client, path: str, body: bytes, status: int, needle: str
) -> None:
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]


def test_hostile_ids_are_just_ids(http: httpx.Client) -> None:
    for chat_id in ["' OR 1=1 --", "..%2F..%2Fetc%2Fpasswd", "x" * 5000, "%00", "ü🙂"]:
        response = http.get(f"/chats/{chat_id}")
        assert response.status_code == 404
        assert len(response.text) < 400
    chat_id = http.post("/chats", json={}).json()["id"]
    surrogate = http.post(f"/chats/{chat_id}/messages", content=b'{"content": "\\ud800 x"}',
                            headers={"content-type": "application/json"})
    assert surrogate.status_code == 422
    assert http.get(f"/chats/{chat_id}").json()["message_count"] == 0


@pytest.mark.parametrize("own_process", [True, False])
def test_only_the_service_process_tunes_the_garbage_collector(
    settings_kwargs: dict[str, object], own_process: bool
) -> None:
    from fastapi.testclient import TestClient

    from chatsessions import Settings
    from chatsessions.service.app import GC_FIRST_GENERATION, create_app

    before = gc.get_threshold()
    app = create_app(Settings(**settings_kwargs), own_process=own_process)  # type: ignore[arg-type]
    try:
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
            assert (gc.get_freeze_count() > 0) is own_process
            assert (gc.get_threshold()[0] == GC_FIRST_GENERATION) is own_process
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
