"""Input checks shared by every surface, so the library and the service refuse alike."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from chatsessions.errors import InvalidInput
from chatsessions.types import ContextPolicy, GenerationParams

MAX_TITLE_CHARS = 500
MAX_METADATA_BYTES = 16_384
MAX_METADATA_DEPTH = 8


def check_text(value: Any, *, field: str, max_chars: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, not {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidInput(f"{field} is empty")
    if len(value) > max_chars:
        raise InvalidInput(f"{field} is {len(value)} characters long; the limit is {max_chars}")
    if "\x00" in value:
        raise InvalidInput(f"{field} contains a NUL character")
    if not _is_utf8(value):
        raise InvalidInput(f"{field} is not valid Unicode (it contains a lone surrogate)")
    return value


def check_label(value: Any, *, field: str, max_chars: int) -> str:
    """Titles, names, ids: one line of printable text."""
    text = check_text(value, field=field, max_chars=max_chars, allow_empty=True)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidInput(f"{field} contains control characters")
    return text


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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



def check_context_policy(value: Any) -> ContextPolicy:
    """The policy itself or its name, so callers may pass either."""
    try:
        return ContextPolicy(value)
    except ValueError:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        names = ", ".join(p.value for p in ContextPolicy)
        raise InvalidInput(f"context_policy must be one of {names}, not {shown}") from None


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    import json

    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object")
    try:
        encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
        size = len(encoded.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"metadata must be plain JSON: {type(exc).__name__}") from None
    if "\x00" in encoded or "\\u0000" in encoded:
        raise InvalidInput("metadata contains a NUL character")
    if _depth(metadata) > MAX_METADATA_DEPTH:
        raise InvalidInput(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}")
    return metadata


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def check_when(value: Any, *, field: str) -> Any:
    """A moment as an aware UTC datetime (naive ones are taken as UTC); None stays None."""
    from datetime import UTC, datetime

    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{field} must be a date and time")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidInput(f"{field} is out of range") from None
