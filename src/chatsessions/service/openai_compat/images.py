"""Images in a Responses API request: the parts of its last user message (the one a turn
stores and answers), taken aside before the input is read as text, so the message is
stored with its parts and shown to the model as parts. Images anywhere else in the
input stay refused, naming the part (a 400)."""

from __future__ import annotations

from typing import Any

IMAGE_PARTS = ("input_image", "image_url")


def last_message_images(items: Any) -> tuple[Any, list[Any] | None]:
    """``items`` with the image parts of its last message taken out (when it is a user
    message holding images), and that message's whole content; else ``(items, None)``."""
    if not isinstance(items, list) or not items:
        return items, None
    last = items[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return items, None
    content = last.get("content")
    if not isinstance(content, list) or not any(
            isinstance(part, dict) and part.get("type") in IMAGE_PARTS for part in content):
        return items, None
    texts = [part for part in content
             if not (isinstance(part, dict) and part.get("type") in IMAGE_PARTS)]
    return [*items[:-1], {**last, "content": texts or ""}], content


def has_images(content: Any) -> bool:
    """Whether a message's content is a list of parts holding an image."""
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") in IMAGE_PARTS for part in content)
