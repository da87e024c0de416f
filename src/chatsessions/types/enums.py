"""Roles, turn statuses and context policies: the closed sets of values chats and messages
are stored with, which the store, the engine and the API all compare against."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    #: a tool's output, answering one of the previous assistant message's tool calls
    TOOL = "tool"


class TurnStatus(enum.StrEnum):
    """A message's status: only ``ok`` messages are ever shown to the model."""

    OK = "ok"
    PENDING = "pending"
    FAILED = "failed"
    #: an answer kept as an alternative after it was regenerated
    REPLACED = "replaced"


class ContextPolicy(enum.StrEnum):
    """What to do when a chat outgrows the model's context window."""

    #: drop the oldest whole turns
    TRIM = "trim"
    #: replace the turns trimming would drop with a model-written summary
    SUMMARIZE = "summarize"
    #: send everything; a chat too long for the window is refused
    NONE = "none"
