"""Tool calls over HTTP: tools on chats and messages, the 409 while a chat waits for
outputs, POST /chats/{id}/tool-results (JSON, SSE, Idempotency-Key), the waiting calls
and cancelling them, tool messages in the history, and another tenant's chat a 404."""

from __future__ import annotations

import httpx

from conftest import LiveServer, sse_events

ORDER = {"type": "function", "function": {
    "name": "order_status", "description": "Where an order is.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                   "required": ["order_id"]}}}


def test_a_tool_round_over_http(http: httpx.Client) -> None:
    chat = http.post("/chats", json={"system_prompt": "S", "tools": [ORDER]}).json()
    assert chat["tools"][0]["function"]["name"] == "order_status"
    asked = http.post(f"/chats/{chat['id']}/messages",
                      json={"content": "Where is order 1234?"}).json()
    (call,) = asked["tool_calls"]
    assert call["function"]["name"] == "order_status"
    waiting = http.get(f"/chats/{chat['id']}/tool-calls").json()["data"]
    assert [c["id"] for c in waiting] == [call["id"]]
    refused = http.post(f"/chats/{chat['id']}/messages", json={"content": "hello?"})
    assert refused.status_code == 409
    assert refused.json()["error"]["type"] == "tool_calls_pending"
    assert call["id"] in refused.json()["error"]["message"]
    wrong = http.post(f"/chats/{chat['id']}/tool-results",
                      json={"results": [{"tool_call_id": "nope", "output": "x"}]})
    assert wrong.status_code == 422
    assert "nope" in wrong.json()["error"]["message"]
    body = {"results": [{"tool_call_id": call["id"], "output": "1234: shipped"}]}
    headers = {"Idempotency-Key": "round-1"}
    answer = http.post(f"/chats/{chat['id']}/tool-results", json=body, headers=headers)
    assert answer.status_code == 200
    assert "1234: shipped" in answer.json()["content"]
    again = http.post(f"/chats/{chat['id']}/tool-results", json=body, headers=headers)
    assert again.json() == answer.json()
    rows = http.get(f"/chats/{chat['id']}/messages").json()["data"]
    assert [r["role"] for r in rows] == ["user", "assistant", "tool", "assistant"]
    assert rows[1]["tool_calls"][0]["id"] == call["id"]
    assert rows[2]["tool_call_id"] == call["id"]


def test_tool_events_stream_and_cancel(http: httpx.Client) -> None:
    chat = http.post("/chats", json={"system_prompt": "S"}).json()
    streamed = http.post(f"/chats/{chat['id']}/messages", json={
        "content": "order 77?", "tools": [ORDER], "stream": True})
    events = sse_events(streamed)
    kinds = [kind for kind, _ in events]
    assert "tool_call.delta" in kinds
    assert kinds[-1] == "done"
    done = events[-1][1]
    call_id = done["tool_calls"][0]["id"]  # type: ignore[index]
    first = next(data for kind, data in events if kind == "tool_call.delta")
    assert first["id"] == call_id
    assert first["name"] == "order_status"
    results = http.post(f"/chats/{chat['id']}/tool-results", json={
        "results": [{"tool_call_id": call_id, "output": "77: lost"}], "stream": True})
    kinds = [kind for kind, _ in sse_events(results)]
    assert kinds[-2:] == ["tool_result", "done"]  # stored with the answer, in one write
    asked = http.post(f"/chats/{chat['id']}/messages", json={
        "content": "and order 78?", "tools": [ORDER]}).json()
    cancelled = http.post(f"/chats/{chat['id']}/tool-calls/cancel", json={}).json()
    assert [c["id"] for c in cancelled["data"]] == [asked["tool_calls"][0]["id"]]
    assert http.post(f"/chats/{chat['id']}/messages",
                     json={"content": "hi", "tool_choice": "none",
                           "tools": [ORDER]}).status_code == 200


def test_another_tenants_chat_is_a_404(keyed: tuple[LiveServer, str, str]) -> None:
    server, key_a, key_b = keyed
    with httpx.Client(base_url=server.url, timeout=30) as plain:
        mine = {"Authorization": f"Bearer {key_a}"}
        theirs = {"Authorization": f"Bearer {key_b}"}
        chat = plain.post("/chats", json={"tools": [ORDER]}, headers=mine).json()
        call = plain.post(f"/chats/{chat['id']}/messages", json={"content": "order 5?"},
                          headers=mine).json()["tool_calls"][0]
        body = {"results": [{"tool_call_id": call["id"], "output": "x"}]}
        for response in (
            plain.post(f"/chats/{chat['id']}/tool-results", json=body, headers=theirs),
            plain.get(f"/chats/{chat['id']}/tool-calls", headers=theirs),
            plain.post(f"/chats/{chat['id']}/tool-calls/cancel", json={}, headers=theirs),
        ):
            assert response.status_code == 404
        assert plain.post(f"/chats/{chat['id']}/tool-results", json=body,
                          headers=mine).status_code == 200


def test_a_chats_tool_choice_over_http(http: httpx.Client) -> None:
    refund = {"type": "function", "function": {
        "name": "refund", "parameters": {"type": "object", "properties": {}}}}
    chat = http.post("/chats", json={"tools": [ORDER, refund], "tool_choice": "refund"}).json()
    assert chat["tool_choice"] == "refund"
    asked = http.post(f"/chats/{chat['id']}/messages", json={"content": "order 3?"}).json()
    assert [c["function"]["name"] for c in asked["tool_calls"]] == ["refund"]
    http.post(f"/chats/{chat['id']}/tool-calls/cancel", json={})
    changed = http.patch(f"/chats/{chat['id']}", json={"tool_choice": "none"}).json()
    assert changed["tool_choice"] == "none"
    answer = http.post(f"/chats/{chat['id']}/messages", json={"content": "order 4?"}).json()
    assert not answer.get("tool_calls")
    wrong = http.patch(f"/chats/{chat['id']}", json={"tool_choice": "nope"})
    assert wrong.status_code == 422
    assert http.patch(f"/chats/{chat['id']}",
                      json={"tool_choice": None}).json()["tool_choice"] is None
    assert http.post("/chats", json={"tool_choice": "refund"}).status_code == 422
