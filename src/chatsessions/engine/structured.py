"""Structured output: the response formats callers ask for, checked, and answers read
back against them.

A schema is checked against its JSON Schema meta-schema with ``jsonschema`` (the draft
its ``$schema`` names, 2020-12 by default), so a typo such as ``"type": "strng"`` is a
clear :class:`InvalidInput` naming where it is, not a provider's 400 or, worse, a
grammar the embedded model silently replaces with "any JSON". Pydantic has no such
check: it writes schemas, it does not validate them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

import jsonschema
import referencing.exceptions
from pydantic import BaseModel, ValidationError

from chatsessions.errors import InvalidAnswer, InvalidInput
from chatsessions.types import FORMAT_NAME, ResponseFormat
from chatsessions.validation import check_text

#: Bound on a schema's JSON, as for a tool's parameters.
MAX_SCHEMA_BYTES = 65_536
MAX_DESCRIPTION_CHARS = 10_000
TYPES = ("text", "json_object", "json_schema")

M = TypeVar("M", bound=BaseModel)
FormatSpec = ResponseFormat | type[BaseModel] | Mapping[str, Any]


def check_response_format(value: FormatSpec | None, *,
                          field: str = "response_format") -> ResponseFormat | None:
    """The format ``value`` describes, checked; None stays None (the provider's default,
    text). ``value`` is a :class:`ResponseFormat`, a pydantic model class, or a dict in
    either of OpenAI's shapes: chat completions' ``{"type": "json_schema", "json_schema":
    {"name", "schema", "strict"}}`` or the Responses API's flat ``text.format``
    ``{"type": "json_schema", "name", "schema", "strict"}``."""
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, BaseModel):
        return _checked(ResponseFormat.from_model(value), field)
    if isinstance(value, ResponseFormat):
        return _checked(value, field)
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be a response format, a pydantic model class "
                           f"or an object, not {type(value).__name__}")
    return _checked(_of_dict(value, field), field)


def _of_dict(value: Mapping[str, Any], field: str) -> ResponseFormat:
    kind = value.get("type")
    if kind not in TYPES:
        raise InvalidInput(f"{field}.type must be one of {', '.join(TYPES)}")
    if kind != "json_schema":
        if set(value) - {"type"}:
            raise InvalidInput(f"{field}: unknown field {sorted(set(value) - {'type'})[0]!r}")
        return ResponseFormat(kind)
    nested = "json_schema" in value
    inner = value["json_schema"] if nested else value
    where = f"{field}.json_schema" if nested else field
    if not isinstance(inner, Mapping):
        raise InvalidInput(f"{where} must be an object")
    allowed = {"name", "schema", "strict", "description"} | (set() if nested else {"type"})
    if unknown := set(inner) - allowed:
        raise InvalidInput(f"{where}: unknown field {sorted(unknown)[0]!r}")
    if nested and set(value) - {"type", "json_schema"}:
        raise InvalidInput(f"{field}: unknown field "
                           f"{sorted(set(value) - {'type', 'json_schema'})[0]!r}")
    if "name" not in inner:
        raise InvalidInput(f"{where}.name is required")
    if "schema" not in inner:
        raise InvalidInput(f"{where}.schema is required")
    strict = inner.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidInput(f"{where}.strict must be true or false")
    return ResponseFormat("json_schema", inner["name"], inner["schema"], strict,
                          inner.get("description"))


def _checked(fmt: ResponseFormat, field: str) -> ResponseFormat:
    if fmt.type not in TYPES:
        raise InvalidInput(f"{field}.type must be one of {', '.join(TYPES)}")
    if fmt.type != "json_schema":
        if fmt.schema is not None or fmt.name is not None:
            raise InvalidInput(f"{field}: only a json_schema format has a name and a schema")
        return fmt
    if not isinstance(fmt.name, str) or not FORMAT_NAME.match(fmt.name):
        raise InvalidInput(f"{field}.name must be 1 to 64 letters, digits, _ or -")
    if fmt.description is not None:
        check_text(fmt.description, field=f"{field}.description",
                   max_chars=MAX_DESCRIPTION_CHARS, allow_empty=True)
    check_schema(fmt.schema, field=f"{field}.schema")
    return fmt


def check_schema(schema: Any, *, field: str = "schema") -> Mapping[str, Any]:
    """``schema`` if it is a valid JSON schema (an object) of bounded size."""
    if not isinstance(schema, Mapping):
        raise InvalidInput(f"{field} must be a JSON schema object")
    try:
        size = len(json.dumps(schema, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError):
        raise InvalidInput(f"{field} is not JSON") from None
    if size > MAX_SCHEMA_BYTES:
        raise InvalidInput(f"{field} is {size} bytes; the limit is {MAX_SCHEMA_BYTES}")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        at = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        raise InvalidInput(f"{field}{at} is not a valid JSON schema: {exc.message}"
                           ) from None
    return schema


def parse_answer(fmt: ResponseFormat, text: str) -> Any:
    """The JSON value of an answer given in ``fmt``, checked against its schema; raises
    :class:`InvalidAnswer` (holding the text) when it is not JSON or does not fit."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidAnswer(f"the model's answer is not JSON: {exc}", partial=text) from None
    if fmt.type == "json_object" and not isinstance(value, dict):
        raise InvalidAnswer("the model's answer is JSON but not an object", partial=text)
    if fmt.type == "json_schema" and fmt.schema is not None:
        validator_class = jsonschema.validators.validator_for(
            fmt.schema, default=jsonschema.Draft202012Validator)
        try:
            error = jsonschema.exceptions.best_match(
                validator_class(fmt.schema).iter_errors(value))
        except referencing.exceptions.Unresolvable as exc:
            raise InvalidAnswer(f"the schema refers to {exc} which it does not hold",
                                partial=text) from None
        if error is not None:
            at = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.path)
            raise InvalidAnswer(f"the model's answer does not fit the schema at "
                                f"{'answer' + at}: {error.message}", partial=text)
    return value


def parse_into(model: type[M], text: str) -> M:
    """An answer read into ``model`` (a library caller's ``response_format=Model``)."""
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"]) or "answer"
        raise InvalidAnswer(f"the model's answer does not fit {model.__name__} at {at}: "
                            f"{first['msg']}", partial=text) from None
