"""What the model sees: the system prompt plus as many whole recent turns as fit, or
everything (policy ``none``), or a summary in place of the turns that do not (``summarize``).

Pure functions, so the policies are tested as a table, apart from storage and backends.
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
    if history[0].role is Role.USER and sum(counts) <= budget:
        return 0  # everything fits: no need to walk it
    total = 0
    start = len(history) - 1
    for index in range(len(history) - 1, -1, -1):
        total += counts[index]
        if total > budget:
            break
        if history[index].role is Role.USER:
            start = index
    return start


def check_fits(counts: Sequence[int], budget: int) -> None:
    """Policy ``none``: everything is sent, so everything must fit ``budget`` tokens."""
    total = sum(counts)
    if total > budget:
        raise ContextTooLong(
            f"the chat needs {total} tokens but only {max(budget, 0)} fit in the model's "
            "context window next to the system prompt and the reserved answer; its context "
            "policy is 'none', so nothing is left out (set it to 'trim' or 'summarize', "
            "or start a new chat)"
        )


def summary_cut(
    history: Sequence[Message],
    counts: Sequence[int],
    budget: int,
    summary_tokens: int,
    reserve: int,
) -> int:
    """How many leading messages of ``history`` a new summary must take in (0: none).

    ``history`` holds the turns after the current summary, ending with the new user
    message; ``summary_tokens`` is what the current summary takes (0 without one) and
    ``reserve`` the most a new one may take. While everything fits next to the current
    summary nothing is summarized. Otherwise whole turns are taken in until the rest fills
    at most half of what the new summary leaves, so the next turns grow into the other half
    before another summary is due: a summary on every turn would double the turn's cost.
    """
    least = trim_start(history, counts, budget - summary_tokens)
    if least == 0:
        return 0
    room = budget - reserve
    target = room // 2 if counts[-1] <= room // 2 else room
    return max(least, trim_start(history, counts, target))


def newest_that_fit(counts: Sequence[int], budget: int) -> int:
    """Index of the first of the newest messages whose ``counts`` fit ``budget`` together
    (``len(counts)`` if not even the last one does): what one summary request can read."""
    total = 0
    for index in range(len(counts) - 1, -1, -1):
        total += counts[index]
        if total > budget:
            return index + 1
    return 0
