"""The done-when of structured output: the official client's ``responses.parse(
text_format=Model)`` against the service on the embedded model gets three valid answers
out of three (llama.cpp's JSON-schema grammar keeps every token in the schema), each
stored as the chat's answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from pydantic import BaseModel

from chatsessions import ChatSessions
from chatsessions.config import Settings
from chatsessions.service import create_app
from tests.conftest import LiveServer

pytestmark = pytest.mark.local_model


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture
def local_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'local.db'}"


@pytest.fixture
def local_sdk(local_url: str) -> Iterator[openai.OpenAI]:
    settings = Settings(database_url=local_url, backend="local", auto_title=False,
                        max_output_tokens=60)
    server = LiveServer(create_app(settings)).start()
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="any key",
                           max_retries=0, timeout=300) as client:
            yield client
    finally:
        server.stop()


def test_responses_parse_on_the_embedded_model_is_valid_three_times_of_three(
        local_sdk: openai.OpenAI, local_url: str) -> None:
    questions = ["Alice is 30 years old.", "My grandfather Bob turned 81 last week.",
                 "Describe someone you know."]
    parsed = [local_sdk.responses.parse(
        input=question, instructions="Answer with the person as JSON.", text_format=Person,
        temperature=0.2) for question in questions]
    assert all(isinstance(p.output_parsed, Person) for p in parsed)
    with ChatSessions(database_url=local_url, backend="local", auto_title=False) as lib:
        for response in parsed:
            chat_id = response.conversation.id  # type: ignore[union-attr]
            answer = lib.history(chat_id)[-1]
            assert Person.model_validate_json(answer.content) == response.output_parsed
