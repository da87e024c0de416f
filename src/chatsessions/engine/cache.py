"""A bounded write-through cache of active chats' visible histories.

A turn must not re-read a long chat: the cache keeps each active chat's ok messages and
their token counts, refreshed incrementally (seq > last seen) when another process has
appended, and evicts least-recently-used chats beyond a byte budget. Any other change (a
message deleted, a new system prompt...) bumps the chat's ``history_version``: an entry
read at another version is dropped and read afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatsessions._lru import ByteLRU
from chatsessions.types import Chat, ImagePart, Message, Role, TurnStatus

#: rough Python object overhead next to the text itself (the row, and its dict as shown)
_PER_MESSAGE_BYTES = 400


@dataclass(slots=True)
class History:
    last_seq: int = 0
    #: the chat's ``history_version`` when this entry was first read (``Chat``)
    version: int = 0
    messages: list[Message] = field(default_factory=list)  # status ok only, in order
    tokens: list[int | None] = field(default_factory=list)
    #: each message as the model is shown it (``as_openai``), built once: a turn that
    #: sends the whole history copies this list instead of building a dict per message
    shown: list[dict[str, Any]] = field(default_factory=list)
    nbytes: int = 0
    #: summaries (role system) among ``messages``: none lets a turn take the history whole
    summaries: int = 0
    #: tool calls and outputs among ``messages``: none lets a turn skip pairing them
    tool_rows: int = 0
    #: the chat row as this process's last turn left it: the next turn presumes it
    #: unchanged and starts with one write instead of two (``Store.begin_turn``)
    chat: Chat | None = None

    def add(self, messages: list[Message]) -> int:
        """Append rows newer than ``last_seq``; return the bytes added.

        A regenerated answer (``replaces_seq``) drops the answer it replaced, so a cache
        that learns of a regenerate from another process's rows stays right too."""
        added = 0
        for message in messages:
            if message.seq <= self.last_seq:
                continue
            self.last_seq = message.seq
            if message.replaces_seq is not None and message.status is TurnStatus.OK:
                added -= self._drop(message.replaces_seq)
            if message.status is TurnStatus.OK:
                self.messages.append(message)
                self.tokens.append(None)
                self.shown.append(message.as_openai())
                self.summaries += message.role is Role.SYSTEM
                self.tool_rows += message.tool_calls is not None or message.role is Role.TOOL
                size = _size(message)
                self.nbytes += size
                added += size
        return added

    def _drop(self, seq: int) -> int:
        """Forget the message ``seq`` (searched from the end: it is a recent answer)."""
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if message.seq == seq:
                del self.messages[index], self.tokens[index], self.shown[index]
                self.summaries -= message.role is Role.SYSTEM
                self.tool_rows -= message.tool_calls is not None or message.role is Role.TOOL
                size = _size(message)
                self.nbytes -= size
                return size
            if message.seq < seq:
                break
        return 0


def chat_entry_bytes(chat: Chat) -> int:
    """About what a cached chat with no messages holds: its row. Counted so that chats
    created and never used still take their share of the budget."""
    return len(chat.system_prompt) + _PER_MESSAGE_BYTES


def _size(message: Message) -> int:
    """About what a message holds in memory: its text, and its images' URLs (an inline
    image is megabytes of base64)."""
    size = len(message.content) + _PER_MESSAGE_BYTES
    for part in message.parts or ():
        if isinstance(part, ImagePart):
            size += len(part.url)
    return size


#: Active chats' visible histories.
HistoryCache = ByteLRU[History]
