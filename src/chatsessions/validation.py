"""Input checks shared by every surface, so the library and the service refuse alike."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from chatsessions.errors import InvalidInput
from chatsessions.types import GenerationParams

MAX_TITLE_CHARS = 500
MAX_METADATA_BYTES = 16_384


def check_text(value: Any, *, field: str, max_chars: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, not {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidInput(f"{field} is empty")
    if len(value) > max_chars:
        raise InvalidInput(f"{field} is {len(value)} characters long; the limit is {max_chars}")
    if "\x00" in value:
        raise InvalidInput(f"{field} contains a NUL character")
    return value


def check_params(params: GenerationParams | dict[str, Any] | None) -> GenerationParams:
    if params is None:
        return GenerationParams()
    if isinstance(params, GenerationParams):
        return params
    try:
        return GenerationParams.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInput(f"invalid generation params: {problems}") from None


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    import json

    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object")
    try:
        size = len(json.dumps(metadata))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"metadata must be JSON-serializable: {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}")
    return metadata
