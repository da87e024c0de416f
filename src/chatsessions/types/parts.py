"""Content parts: a message that holds more than text (images), and the text that search,
titles and token counts read from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TextPart:
    """Text inside a message whose content is a list of parts."""

    text: str

    def as_openai(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image inside a message: an ``https``/``http`` URL or a ``data:image/...;base64``
    URL, and OpenAI's ``detail`` (``auto``, ``low``, ``high``; None: the provider's)."""

    url: str
    detail: str | None = None

    def as_openai(self) -> dict[str, Any]:
        image: dict[str, Any] = {"url": self.url}
        if self.detail is not None:
            image["detail"] = self.detail
        return {"type": "image_url", "image_url": image}


ContentPart = TextPart | ImagePart


def parts_text(parts: Sequence[ContentPart]) -> str:
    """What a message's text is when its content is parts: its text parts, one per line.
    Search, titles and token counts read this."""
    return "\n".join(part.text for part in parts if isinstance(part, TextPart))


def parts_json(parts: Sequence[ContentPart]) -> list[dict[str, Any]]:
    """Parts in OpenAI's chat shape, which is also how they are stored and exported."""
    return [part.as_openai() for part in parts]


def parts_of_json(data: Sequence[Mapping[str, Any]]) -> tuple[ContentPart, ...]:
    """The inverse of :func:`parts_json`, for data this package wrote (unchecked)."""
    parts: list[ContentPart] = []
    for item in data:
        if item["type"] == "text":
            parts.append(TextPart(item["text"]))
        else:
            image = item["image_url"]
            parts.append(ImagePart(image["url"], image.get("detail")))
    return tuple(parts)
