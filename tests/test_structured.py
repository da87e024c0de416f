"""Structured output below the public API: response formats checked (a schema against its
meta-schema), answers read back against them, the fake model answering with JSON valid
for any schema it is given, the openai backend passing the format on, and the embedded
model kept to the schema by llama.cpp's grammar so that its answers always parse."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from chatsessions.backends.base import Completion
from chatsessions.backends.local import LocalBackend
from chatsessions.backends.openai import OpenAIBackend
from chatsessions.config import Settings
from chatsessions.engine.structured import (
    MAX_SCHEMA_BYTES,
    check_response_format,
    check_schema,
    parse_answer,
    parse_into,
)
from chatsessions.errors import BackendError, InvalidAnswer, InvalidInput
from chatsessions.testing import FakeLLMServer, Fault
from chatsessions.types import GenerationParams, ResponseFormat


class Person(BaseModel):
    """Someone mentioned in the text."""

    name: str
    age: int


class Address(BaseModel):
    city: str
    postcode: int | None = None


class Profile(BaseModel):
    person: Person
    home: Address
    tags: list[str]
    kind: Literal["customer", "staff"]
    vip: bool
    score: float = Field(ge=1, le=5)
    friends: list[Profile] = []


ASK = [{"role": "system", "content": "Extract the person."},
       {"role": "user", "content": "Alice is 30 and lives in Paris 75001."}]


# --- formats -----------------------------------------------------------------------------

def test_a_model_class_becomes_a_named_schema_format() -> None:
    fmt = check_response_format(Person)
    assert fmt is not None
    assert (fmt.type, fmt.name, fmt.description, fmt.strict) == (
        "json_schema", "Person", "Someone mentioned in the text.", None)
    assert fmt.schema == {"type": "object", "required": ["name", "age"], "properties": {
        "name": {"title": "Name", "type": "string"},
        "age": {"title": "Age", "type": "integer"}}}
    assert fmt.as_openai() == {"type": "json_schema", "json_schema": {
        "name": "Person", "schema": fmt.schema, "description": fmt.description}}
    assert fmt.as_responses() == {"type": "json_schema", "name": "Person",
                                  "schema": fmt.schema, "description": fmt.description}


def test_strict_closes_every_object_and_requires_every_property() -> None:
    schema = ResponseFormat.from_model(Profile, strict=True).schema
    assert schema is not None
    objects = [o for o in (schema, *schema["$defs"].values()) if o.get("type") == "object"]
    assert len(objects) == 3  # Profile (recursive: the root refers to it), Person, Address
    assert all(o["additionalProperties"] is False for o in objects)
    assert all(o["required"] == list(o["properties"]) for o in objects)
    assert "friends" in schema["$defs"]["Profile"]["required"]


@pytest.mark.parametrize("shape", [
    {"type": "json_schema", "json_schema": {"name": "Person", "strict": True,
                                            "schema": Person.model_json_schema()}},
    {"type": "json_schema", "name": "Person", "strict": True,
     "schema": Person.model_json_schema()},
])
def test_both_openai_shapes_read_alike(shape: dict[str, Any]) -> None:
    fmt = check_response_format(shape)
    assert fmt == ResponseFormat("json_schema", "Person", Person.model_json_schema(), True)


@pytest.mark.parametrize("kind", ["text", "json_object"])
def test_plain_kinds(kind: str) -> None:
    fmt = check_response_format({"type": kind})
    assert fmt == ResponseFormat(kind)
    assert fmt.structured is (kind == "json_object")
    assert fmt.as_openai() == {"type": kind}
    assert check_response_format(None) is None


@pytest.mark.parametrize(("value", "needle"), [
    ({"type": "json_schema", "json_schema": {"name": "p",
                                             "schema": {"type": "strng"}}},
     "response_format.schema.type is not a valid JSON schema"),
    ({"type": "json_schema", "name": "p", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "minLength": -1}}}},
     "response_format.schema.properties.a.minLength is not a valid JSON schema"),
    ({"type": "json_schema", "name": "p", "schema": {"required": "name"}},
     "response_format.schema.required is not a valid JSON schema"),
    ({"type": "json_schema", "name": "p", "schema": []}, "must be a JSON schema object"),
    ({"type": "json_schema", "name": "p", "schema": {"x": float("nan")}}, "is not JSON"),
    ({"type": "json_schema", "name": "has space", "schema": {}}, "1 to 64 letters"),
    ({"type": "json_schema", "json_schema": {"schema": {}}}, "json_schema.name is required"),
    ({"type": "json_schema", "name": "p"}, "response_format.schema is required"),
    ({"type": "json_schema", "name": "p", "schema": {}, "strict": "yes"}, "true or false"),
    ({"type": "json_schema", "name": "p", "schema": {}, "extra": 1}, "unknown field 'extra'"),
    ({"type": "json_object", "schema": {}}, "unknown field 'schema'"),
    ({"type": "yaml"}, "must be one of text, json_object, json_schema"),
    ("json", "must be a response format"),
    (ResponseFormat("json_object", schema={}), "only a json_schema format"),
    (ResponseFormat("json_schema", "p", {"type": 3}), "not a valid JSON schema"),
])
def test_a_bad_format_is_refused_naming_the_field(value: Any, needle: str) -> None:
    with pytest.raises(InvalidInput, match=None) as refused:
        check_response_format(value)
    assert needle in str(refused.value)


def test_a_schema_has_a_size_limit() -> None:
    big = {"type": "object", "description": "x" * MAX_SCHEMA_BYTES}
    with pytest.raises(InvalidInput, match="bytes; the limit is"):
        check_schema(big)


def test_answers_are_checked_against_the_schema() -> None:
    fmt = ResponseFormat.from_model(Person)
    assert parse_answer(fmt, '{"name": "Alice", "age": 30}') == {"name": "Alice", "age": 30}
    assert parse_into(Person, '{"name": "Alice", "age": 30}') == Person(name="Alice", age=30)
    with pytest.raises(InvalidAnswer, match=r"answer\.age: 'x' is not of type 'integer'"):
        parse_answer(fmt, '{"name": "Alice", "age": "x"}')
    with pytest.raises(InvalidAnswer, match="not JSON") as bad:
        parse_answer(fmt, "Alice, 30")
    assert bad.value.partial == "Alice, 30"
    assert isinstance(bad.value, BackendError)
    with pytest.raises(InvalidAnswer, match="not an object"):
        parse_answer(ResponseFormat.json_object(), "[1]")
    with pytest.raises(InvalidAnswer, match="does not fit Person at age"):
        parse_into(Person, '{"name": "Alice", "age": "thirty"}')


# --- the fake model ----------------------------------------------------------------------

SCHEMAS: list[dict[str, Any]] = [
    Person.model_json_schema(),
    Profile.model_json_schema(),
    ResponseFormat.from_model(Profile, strict=True).schema,  # type: ignore[list-item]
    {"type": "object", "properties": {
        "when": {"type": "string", "format": "date-time"},
        "mail": {"type": "string", "format": "email"},
        "code": {"type": "string", "minLength": 12, "maxLength": 12},
        "short": {"type": "string", "maxLength": 2},
        "n": {"type": "integer", "minimum": 100, "maximum": 200},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                 "minItems": 2},
        "maybe": {"anyOf": [{"type": "null"}, {"type": "number"}]},
        "fixed": {"const": "v1"},
        "nothing": {"type": "null"},
        "either": {"type": ["null", "boolean"]}},
     "required": ["when", "mail", "code", "short", "n", "pair", "maybe", "fixed"],
     "additionalProperties": False},
    {"type": "object"},
]


@pytest.fixture
def client(fake_llm: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake_llm.base_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_fake_answers_json_valid_for_the_schema(
        client: openai.OpenAI, schema: dict[str, Any]) -> None:
    done = client.chat.completions.create(
        model="m", messages=ASK,  # type: ignore[arg-type]
        response_format={"type": "json_schema",
                         "json_schema": {"name": "out", "schema": schema}})
    answer = json.loads(done.choices[0].message.content or "")
    jsonschema.validate(answer, schema)


def test_the_fake_takes_words_for_strings_and_digits_for_numbers(
        client: openai.OpenAI) -> None:
    """What ``chat.completions.parse(response_format=Model)`` gets from the fake."""
    done = client.chat.completions.parse(model="m", messages=ASK,  # type: ignore[arg-type]
                                         response_format=Person)
    assert done.choices[0].message.parsed == Person(name="Alice", age=30)
    profile = client.chat.completions.parse(
        model="m", messages=ASK, response_format=Profile).choices[0].message.parsed  # type: ignore[arg-type]
    assert profile is not None
    assert profile.person == Person(name="Alice", age=30)
    assert (profile.home.city, profile.home.postcode) == ("is", 75001)
    assert (profile.kind, profile.vip, profile.score) == ("customer", False, 5)


def test_the_fake_streams_json_and_answers_json_object(client: openai.OpenAI) -> None:
    fmt: Any = {"type": "json_schema",
                "json_schema": {"name": "p", "schema": Person.model_json_schema()}}
    with client.chat.completions.create(model="m", messages=ASK,  # type: ignore[arg-type]
                                        response_format=fmt, stream=True) as stream:
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 1
    assert json.loads("".join(pieces)) == {"name": "Alice", "age": 30}
    plain = client.chat.completions.create(model="m", messages=ASK)  # type: ignore[arg-type]
    as_object = client.chat.completions.create(
        model="m", messages=ASK, response_format={"type": "json_object"})  # type: ignore[arg-type]
    assert json.loads(as_object.choices[0].message.content or "") == {
        "reply": plain.choices[0].message.content}


@pytest.mark.parametrize("bad", [
    {"type": "yaml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {}},
    "json_object"])
def test_the_fake_refuses_a_malformed_format(client: openai.OpenAI, bad: Any) -> None:
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(model="m", messages=ASK,  # type: ignore[arg-type]
                                       response_format=bad)


# --- the openai backend ------------------------------------------------------------------

@pytest.fixture
async def backend(fake_llm: FakeLLMServer) -> AsyncIterator[OpenAIBackend]:
    opened = OpenAIBackend(Settings(openai_base_url=fake_llm.base_url, openai_api_key="x",
                                    max_retries=0, request_timeout=5.0))
    yield opened
    await opened.aclose()


async def test_the_openai_backend_passes_the_format(
        backend: OpenAIBackend, fake_llm: FakeLLMServer) -> None:
    fmt = ResponseFormat.from_model(Person, strict=True)
    done = await backend.complete(ASK, GenerationParams(), "m", response_format=fmt)
    assert parse_into(Person, done.text) == Person(name="Alice", age=30)
    items = [item async for item in backend.stream(ASK, GenerationParams(), "m",
                                                     response_format=fmt)]
    final = items[-1]
    assert isinstance(final, Completion)
    assert "".join(i for i in items if isinstance(i, str)) == final.text == done.text
    await backend.complete(ASK, GenerationParams(), "m", response_format=ResponseFormat())
    await backend.complete(ASK, GenerationParams(), "m")
    sent = [r.params.get("response_format") for r in fake_llm.requests]
    assert sent == [fmt.as_openai(), fmt.as_openai(), None, None]


async def test_a_cut_structured_stream_fails_like_any_other(
        backend: OpenAIBackend, fake_llm: FakeLLMServer) -> None:
    fake_llm.inject(Fault.cut_stream(1))
    fmt = ResponseFormat.from_model(Person)
    with pytest.raises(BackendError, match="broke off") as cut:
        async for _ in backend.stream(ASK, GenerationParams(), "m", response_format=fmt):
            pass
    assert cut.value.partial == '{"name": '


# --- the embedded model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def local() -> LocalBackend:
    return LocalBackend(Settings())


def test_a_schema_the_grammar_cannot_express_is_refused(local: LocalBackend) -> None:
    """llama-cpp-python itself would fall back to "any JSON"; we refuse instead."""
    for schema in ({"not": {"type": "string"}}, {"$ref": "https://example.com/s.json"}):
        with pytest.raises(InvalidInput, match="cannot keep to this schema"):
            local._kwargs(ASK, GenerationParams(), None, ResponseFormat.json_schema(schema))


@pytest.mark.local_model
async def test_the_embedded_model_always_answers_valid_json(local: LocalBackend) -> None:
    fmt = ResponseFormat.from_model(Person)
    questions = ["Alice is 30 years old.", "My grandfather Bob turned 81 last week.",
                 "Describe someone you know."]
    try:
        for question in questions:
            done = await local.complete(
                [{"role": "system", "content": "Answer with the person as JSON."},
                 {"role": "user", "content": question}],
                GenerationParams(seed=7), "m", response_format=fmt)
            assert done.finish_reason == "stop"
            assert isinstance(parse_into(Person, done.text), Person)
            jsonschema.validate(json.loads(done.text), fmt.schema or {})
        streamed = [item async for item in local.stream(
            [{"role": "user", "content": "Carol, 42, likes tea."}], GenerationParams(seed=7),
            "m", response_format=ResponseFormat.json_object())]
        final = streamed[-1]
        assert isinstance(final, Completion)
        assert isinstance(parse_answer(ResponseFormat.json_object(), final.text), dict)
    finally:
        await local.aclose()
