"""What the model sees: the system prompt plus as many whole recent turns as fit.

Pure functions, so the policy is tested as a table, apart from storage and backends.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatsessions.errors import ContextTooLong
from chatsessions.types import Message, Role


def trim_start(history: Sequence[Message], counts: Sequence[int], budget: int) -> int:
    """Index of the first history message to send so the total fits ``budget`` tokens.

    ``history`` is the chat's ok messages ending with the new user message. Only whole
    turns are dropped: the kept part always starts at a user message, and the new user
    message is always kept (if it alone is too big, that is the caller's error).
    """
    if not history:
        return 0
    if counts[-1] > budget:
        raise ContextTooLong(
            f"the message takes {counts[-1]} tokens but only {max(budget, 0)} fit in the "
            "model's context window next to the system prompt and the reserved answer"
        )
    total = 0
    start = len(history) - 1
    for index in range(len(history) - 1, -1, -1):
        total += counts[index]
        if total > budget:
            break
        if history[index].role is Role.USER:
            start = index
    return start
