"""Message content as parts: text and images, from what callers hand us, checked.

A message that holds images is stored as its parts (``Message.parts``, OpenAI's chat
shape) with its text in ``content``, so search, titles and token counts read text as
before. Callers give content as a string, or as a list of parts in either of OpenAI's
shapes: chat completions' ``{"type": "text", "text"}`` and ``{"type": "image_url",
"image_url": {"url", "detail"}}``, or the Responses API's ``{"type": "input_text",
"text"}`` and ``{"type": "input_image", "image_url": "...", "detail"}``. Images are URLs
(``https``/``http``) or base64 ``data:`` URLs of PNG, JPEG, GIF or WebP, within the limits
below: every image is stored in the database with its message.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any

from chatsessions.errors import InvalidInput
from chatsessions.types import ContentPart, ImagePart, TextPart, parts_text
from chatsessions.validation import check_text

#: Images one message may hold (OpenAI takes up to 500 a request; a chat turn needs few).
MAX_IMAGES = 16
#: Characters of an ``https`` image URL.
MAX_URL_CHARS = 2048
#: Bytes of one image sent inline (decoded), and of all a message's inline images.
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_MESSAGE_IMAGE_BYTES = 20 * 1024 * 1024
MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
DETAILS = ("auto", "low", "high")
MAX_PARTS = 64

_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)

PartSpec = ContentPart | Mapping[str, Any]


def check_content(value: str | Sequence[PartSpec], *, field: str = "content",
                  max_chars: int, allow_empty: bool = False,
                  ) -> tuple[str, tuple[ContentPart, ...] | None]:
    """The text and (when there are images) the parts of ``value``, checked. Text only,
    as a string or as parts, gives ``(text, None)``: nothing beyond text is stored."""
    if isinstance(value, str):
        return check_text(value, field=field, max_chars=max_chars,
                          allow_empty=allow_empty), None
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidInput(f"{field} must be a string or a list of parts")
    if not value and not allow_empty:
        raise InvalidInput(f"{field} is empty")
    if len(value) > MAX_PARTS:
        raise InvalidInput(f"{field} has {len(value)} parts; the limit is {MAX_PARTS}")
    parts = tuple(_part(item, f"{field}.{index}") for index, item in enumerate(value))
    images = [part for part in parts if isinstance(part, ImagePart)]
    if len(images) > MAX_IMAGES:
        raise InvalidInput(f"{field} holds {len(images)} images; the limit is {MAX_IMAGES}")
    inline = sum(_inline_bytes(image.url) for image in images)
    if inline > MAX_MESSAGE_IMAGE_BYTES:
        raise InvalidInput(f"{field}: its images take {inline} bytes; the limit for one "
                           f"message is {MAX_MESSAGE_IMAGE_BYTES}")
    text = parts_text(parts)
    check_text(text, field=field, max_chars=max_chars, allow_empty=allow_empty or bool(images))
    return text, (parts if images else None)


def _part(item: Any, where: str) -> ContentPart:
    if isinstance(item, TextPart):
        return TextPart(check_text(item.text, field=f"{where}.text", max_chars=10**9,
                                   allow_empty=True))
    if isinstance(item, ImagePart):
        return _image(item.url, item.detail, where)
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where} must be a part object")
    kind = item.get("type")
    if kind in ("text", "input_text"):
        _only(item, {"type", "text"}, where)
        return TextPart(check_text(item.get("text"), field=f"{where}.text",
                                   max_chars=10**9, allow_empty=True))
    if kind == "image_url":
        _only(item, {"type", "image_url"}, where)
        image = item.get("image_url")
        if isinstance(image, str):  # some clients send the URL itself
            return _image(image, None, where)
        if not isinstance(image, Mapping):
            raise InvalidInput(f"{where}.image_url must be an object with a url")
        _only(image, {"url", "detail"}, f"{where}.image_url")
        return _image(image.get("url"), image.get("detail"), f"{where}.image_url")
    if kind == "input_image":
        _only(item, {"type", "image_url", "detail", "file_id"}, where)
        if item.get("file_id") is not None:
            raise InvalidInput(f"{where}.file_id: uploaded files are not supported; send "
                               "the image as image_url (a URL or a base64 data URL)")
        return _image(item.get("image_url"), item.get("detail"), where)
    raise InvalidInput(f"{where}.type must be text or image_url (or the Responses API's "
                       "input_text or input_image)")


def _only(item: Mapping[str, Any], allowed: set[str], where: str) -> None:
    if unknown := set(item) - allowed:
        raise InvalidInput(f"{where}: unknown field {sorted(unknown)[0]!r}")


def _image(url: Any, detail: Any, where: str) -> ImagePart:
    if detail is not None and detail not in DETAILS:
        raise InvalidInput(f"{where}.detail must be one of {', '.join(DETAILS)}")
    if not isinstance(url, str) or not url:
        raise InvalidInput(f"{where}.url must be a URL")
    if url.startswith("data:"):
        _check_data_url(url, f"{where}.url")
    elif url.startswith(("https://", "http://")):
        if len(url) > MAX_URL_CHARS:
            raise InvalidInput(f"{where}.url is {len(url)} characters long; the limit is "
                               f"{MAX_URL_CHARS}")
        if any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
            raise InvalidInput(f"{where}.url contains spaces or control characters")
    else:
        raise InvalidInput(f"{where}.url must be an https URL or a base64 data URL")
    return ImagePart(url, detail)


def _check_data_url(url: str, where: str) -> None:
    found = _DATA_URL.fullmatch(url)
    if found is None:
        raise InvalidInput(f"{where} must be data:<media type>;base64,<data>")
    if found["type"].lower() not in MEDIA_TYPES:
        raise InvalidInput(f"{where}: {found['type'][:50]} is not an image type taken "
                           f"({', '.join(MEDIA_TYPES)})")
    size = len(found["data"]) * 3 // 4
    if size > MAX_IMAGE_BYTES:
        raise InvalidInput(f"{where}: the image is about {size} bytes; the limit is "
                           f"{MAX_IMAGE_BYTES}")
    try:
        base64.b64decode(found["data"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where} is not valid base64") from None


def _inline_bytes(url: str) -> int:
    """About how many bytes an image sent inline takes (0 for a linked one)."""
    if not url.startswith("data:"):
        return 0
    return (len(url) - url.find(",") - 1) * 3 // 4
