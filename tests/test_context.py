"""The trimming policy as a table: whole turns go, oldest first; the new message stays."""

from __future__ import annotations

import pytest

from chatsessions.engine.context import trim_start
from chatsessions.errors import ContextTooLong
from chatsessions.types import Message, Role


def conversation(turns: int) -> list[Message]:
    """``turns`` finished turns followed by the new user message."""
    messages: list[Message] = []
    for _ in range(turns):
        messages.append(Message("c", 0, Role.USER, "q"))
        messages.append(Message("c", 0, Role.ASSISTANT, "a"))
    messages.append(Message("c", 0, Role.USER, "new"))
    return messages


@pytest.mark.parametrize(
    ("turns", "counts", "budget", "start"),
    [
        (0, [5], 5, 0),  # only the new message, exactly fits
        (2, [1, 1, 1, 1, 1], 100, 0),  # everything fits
        (2, [1, 1, 1, 1, 1], 4, 2),  # one turn dropped
        (2, [1, 1, 1, 1, 1], 3, 2),  # the assistant alone would fit, but turns go whole
        (2, [1, 1, 1, 1, 1], 2, 4),  # only the new message
        (3, [10, 10, 1, 1, 1, 1, 1], 6, 2),  # a big old turn is the one dropped
        (1, [1, 50, 1], 10, 2),  # a long answer drops its whole turn
    ],
)
def test_trim_start(turns: int, counts: list[int], budget: int, start: int) -> None:
    history = conversation(turns)
    assert len(counts) == len(history)
    result = trim_start(history, counts, budget)
    assert result == start
    assert history[result].role is Role.USER
    assert sum(counts[result:]) <= budget


def test_new_message_alone_too_big() -> None:
    with pytest.raises(ContextTooLong, match="takes 11 tokens but only 10 fit"):
        trim_start(conversation(1), [1, 1, 11], 10)


def test_empty_history() -> None:
    assert trim_start([], [], 10) == 0


def test_a_history_starting_with_an_answer_is_cut_at_a_question_even_when_it_fits() -> None:
    """An imported chat may open with the assistant: the kept part still starts with the
    user, so the shortcut for "everything fits" must not apply."""
    history = [Message("c", 0, Role.ASSISTANT, "hello"), *conversation(1)]
    assert trim_start(history, [1, 1, 1, 1], 100) == 1
