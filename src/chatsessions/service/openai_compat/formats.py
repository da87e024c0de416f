"""What a /v1 request asks of its answer's shape and of its context, as the library's
keywords: ``response_format`` (chat completions) or ``text.format`` (Responses API), and
the Responses API's ``truncation`` and ``context_management``, OpenAI's names for what
the context policies do: ``truncation: "auto"`` is ``trim`` (the oldest turns are left
out), ``"disabled"`` is ``none`` (a conversation too long for the window is refused with
``context_length_exceeded``, storing nothing), and a ``compaction`` entry is
``summarize`` (the turns that no longer fit are replaced by a model-written summary).
Without any of them the chat's own policy applies. Checked before anything is stored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatsessions import InvalidInput, check_response_format
from chatsessions.service.openai_compat.errors import bad_request

TRUNCATION = {"auto": "trim", "disabled": "none"}


def format_keywords(value: Mapping[str, Any] | None, field: str) -> dict[str, Any]:
    """``{"response_format": ...}`` for a structured format (checked: a bad schema is a
    400 naming it), nothing for text or none."""
    try:
        fmt = check_response_format(value, field=field)
    except InvalidInput as exc:
        raise bad_request(str(exc), field) from None
    return {"response_format": fmt} if fmt is not None and fmt.structured else {}


def policy_keywords(truncation: str | None,
                    context_management: list[Any] | None) -> dict[str, Any]:
    """``{"context_policy": ...}`` for ``truncation`` and ``context_management``."""
    policy = None
    if truncation is not None:
        if truncation not in TRUNCATION:
            raise bad_request("Invalid value for 'truncation': expected 'auto' or "
                              "'disabled'.", "truncation", "invalid_value")
        policy = TRUNCATION[truncation]
    for index, entry in enumerate(context_management or ()):
        if not isinstance(entry, Mapping) or entry.get("type") != "compaction":
            raise bad_request("Only context management of type 'compaction' is supported.",
                              f"context_management[{index}].type", "invalid_value")
        policy = "summarize"
    return {} if policy is None else {"context_policy": policy}
