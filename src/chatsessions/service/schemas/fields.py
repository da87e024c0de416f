"""The constrained field types every resource shares (labels, text, content, metadata, the
context policy), and what a pattern mismatch means for the error message."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

LABEL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00]*$"
#: what ``str.strip`` removes, spelled out: ``\s`` differs between Python and ECMA regexes
BLANK = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
CONTENT_PATTERN = rf"^[^\x00]*[^\x00{BLANK}][^\x00]*$"
KEY_PATTERN = r"^[^\x00]+$"
#: What a pattern mismatch means, for error messages people can act on.
PATTERN_HINTS = {
    LABEL_PATTERN: "must be one line without control characters",
    TEXT_PATTERN: "must not contain a NUL character",
    CONTENT_PATTERN: "is empty or contains a NUL character",
    KEY_PATTERN: "must not contain a NUL character",
}

#: One line of text: no control characters.
Label = Annotated[str, StringConstraints(max_length=500, pattern=LABEL_PATTERN)]
#: Free text: anything but NUL, up to the default message limit.
Text = Annotated[str, StringConstraints(max_length=32_000, pattern=TEXT_PATTERN)]
#: A message must say something.
Content = Annotated[str, StringConstraints(max_length=32_000, pattern=CONTENT_PATTERN)]
MetadataValue = (
    Annotated[str, StringConstraints(max_length=512, pattern=r"^[^\x00]*$")]
    | int | float | bool | None
)
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                               pattern=KEY_PATTERN)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(max_length=32, description="up to 32 keys with scalar values, for filtering",
          # pydantic states key patterns as patternProperties, which lets other keys
          # through; propertyNames says what we actually enforce.
          json_schema_extra={"propertyNames": {"minLength": 1, "maxLength": 64,
                                               "pattern": "^[^\\x00]+$"},
                             "additionalProperties": False}),
]


ContextPolicyName = Literal["trim", "summarize", "none"]
CONTEXT_POLICY_HELP = (
    "when the chat outgrows the model's context window: trim drops the oldest whole turns, "
    "summarize replaces them with a summary the model writes (stored as a system message), "
    "none sends everything and refuses a turn that does not fit (422 context_too_long)")
