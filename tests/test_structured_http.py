"""``POST /chats/{id}/messages`` with a ``response_format`` (the answer comes back parsed,
plain and streamed) and content as parts (stored, listed and exported with its parts),
on SQLite and PostgreSQL, against the fake model."""

from __future__ import annotations

import base64
import json

import httpx

from chatsessions.testing import FakeLLMServer
from tests.conftest import sse_events

PIXEL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
ORDER = {"type": "json_schema", "json_schema": {"name": "order", "schema": {
    "type": "object", "properties": {"item": {"type": "string"},
                                     "quantity": {"type": "integer"}},
    "required": ["item", "quantity"], "additionalProperties": False}}}


def test_a_response_format_gives_the_answer_parsed(http: httpx.Client,
                                                   fake_llm: FakeLLMServer) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    answer = http.post(f"/chats/{chat_id}/messages",
                       json={"content": "order 3 lamps", "response_format": ORDER})
    assert answer.status_code == 200, answer.text
    assert answer.json()["parsed"] == {"item": "order", "quantity": 3}
    assert json.loads(answer.json()["content"]) == {"item": "order", "quantity": 3}
    assert fake_llm.requests[-1].params["response_format"] == ORDER
    streamed = http.post(f"/chats/{chat_id}/messages", json={
        "content": "order 5 chairs", "response_format": ORDER, "stream": True})
    done = [data for event, data in sse_events(streamed) if event == "done"]
    assert done, streamed.text
    assert done[-1]["parsed"] == {"item": "order", "quantity": 5}


def test_an_invalid_schema_is_refused_as_invalid_input(http: httpx.Client) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    refused = http.post(f"/chats/{chat_id}/messages", json={
        "content": "hi", "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "strng"}}}})
    assert refused.status_code == 422  # our API's InvalidInput; /v1 answers 400
    assert "not a valid JSON schema" in refused.text
    assert http.get(f"/chats/{chat_id}/messages").json()["data"][1:] == []


def test_parts_are_stored_listed_and_exported(http: httpx.Client,
                                              fake_llm: FakeLLMServer) -> None:
    chat_id = http.post("/chats", json={}).json()["id"]
    parts = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": PIXEL}}]
    answer = http.post(f"/chats/{chat_id}/messages", json={"content": parts})
    assert answer.status_code == 200, answer.text
    assert fake_llm.requests[-1].messages[-1]["content"] == parts
    listed = http.get(f"/chats/{chat_id}/messages").json()["data"]
    question = next(m for m in listed if m["role"] == "user")
    assert question["content"] == "What is this?"
    assert question["parts"] == parts
    exported = http.get(f"/chats/{chat_id}/export").json()
    assert [m["parts"] for m in exported["messages"] if m["role"] == "user"] == [parts]
    bad = http.post(f"/chats/{chat_id}/messages", json={
        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]})
    assert bad.status_code == 422
    assert "https URL" in bad.text
