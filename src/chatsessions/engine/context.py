"""What the model sees: the system prompt plus as many whole recent turns as fit, or
everything (policy ``none``), or a summary in place of the turns that do not (``summarize``).

The policies' arithmetic is pure functions, tested as a table apart from storage and
backends; :func:`plan_context` applies them to a chat's cached history, counting each
message's tokens once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from chatsessions.backends import Backend
from chatsessions.backends.base import ChatMessages
from chatsessions.engine import summary
from chatsessions.engine.cache import History
from chatsessions.engine.summary import Refresh
from chatsessions.errors import BackendError, ContextTooLong
from chatsessions.types import Chat, ContextPolicy, GenerationParams, Message, Role

log = logging.getLogger(__name__)

#: Tokens the chat template spends to open the assistant's answer.
ANSWER_PRIMER_TOKENS = 3


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


@dataclass(slots=True)
class Context:
    """What the model is shown for one turn, and the summary to write first when the
    ``summarize`` policy needs a new one."""

    system: dict[str, str]
    system_tokens: int
    #: tokens for the summary, the history and the new message
    budget: int
    #: the history sent, in whole turns, ending with the new user message; their tokens
    #: and their dicts as the model is shown them
    turns: list[Message]
    counts: list[int]
    views: list[dict[str, str]]
    summary: dict[str, str] | None = None
    summary_tokens: int = 0
    refresh: Refresh | None = None

    @property
    def messages(self) -> list[dict[str, str]]:
        head = [self.system] if self.summary is None else [self.system, self.summary]
        return [*head, *self.views]

    @property
    def tokens(self) -> int:
        """Tokens of the messages shown, by the backend's count."""
        return self.system_tokens + self.summary_tokens + sum(self.counts)

    def keep(self, start: int) -> Context:
        self.turns, self.counts = self.turns[start:], self.counts[start:]
        self.views = self.views[start:]
        return self

    def summarized(self, written: Message, backend: Backend, model: str) -> Context:
        """This context with the summary just written in place of the turns it took in."""
        view = summary.shown(written)
        tokens = backend.count_tokens(view["role"], view["content"], model)
        try:
            start = trim_start(self.turns, self.counts, self.budget - tokens)
        except ContextTooLong:
            raise BackendError(f"the summary took {tokens} tokens and left no room for "
                               "the message; try again") from None
        if start:  # the model wrote more than its reserve; fit what is left
            log.warning("chat %s: a %d-token summary left %d more messages out",
                        written.chat_id, tokens, start)
        self.summary, self.summary_tokens, self.refresh = view, tokens, None
        return self.keep(start)


def plan_context(
    chat: Chat,
    history: History,
    text: str,
    backend: Backend,
    params: GenerationParams,
    *,
    max_output_tokens: int,
    summarize: bool = True,
) -> Context:
    """The context for a new message ``text``, as the chat's context policy says.

    ``trim``: the system prompt and the newest whole turns that fit the window less the
    reserved answer. ``none``: everything, or ContextTooLong. ``summarize``: the latest
    summary in place of the turns it covers, then the newest turns that fit; when trimming
    would drop turns the summary does not cover, ``refresh`` says what the next summary
    must take in (with ``summarize=False`` those turns are trimmed instead). Raises
    ContextTooLong before anything is stored. Summary rows are never sent as turns.
    ``max_output_tokens`` is the answer's reserve when ``params`` set none.
    """
    model = chat.model
    reserve = params.max_tokens or max_output_tokens
    system_tokens = backend.count_tokens("system", chat.system_prompt, model)
    budget = backend.context_window(model) - reserve - system_tokens - ANSWER_PRIMER_TOKENS
    if budget <= 0:
        raise ContextTooLong(
            "the system prompt and the reserved answer already fill the context window")
    policy = chat.context_policy
    latest = _latest_summary(history) if policy is ContextPolicy.SUMMARIZE else None
    previous = history.messages[latest] if latest is not None else None
    after = (previous.covers_seq or 0) if previous is not None else 0
    new_tokens = backend.count_tokens("user", text, model)
    turns, counts, views = _recent_turns(history, after, backend, model, limit=None
                                         if policy is ContextPolicy.NONE
                                         else budget - new_tokens)
    turns.append(Message(chat.id, 0, Role.USER, text))
    counts.append(new_tokens)
    views.append({"role": Role.USER.value, "content": text})
    context = Context({"role": "system", "content": chat.system_prompt}, system_tokens,
                      budget, turns, counts, views)
    if policy is ContextPolicy.NONE:
        check_fits(counts, budget)
        return context
    if policy is ContextPolicy.TRIM:
        return context.keep(trim_start(turns, counts, budget))
    if previous is not None and latest is not None:
        context.summary = summary.shown(previous)
        context.summary_tokens = _count(history, latest, backend, model)
    if not summarize:
        return context.keep(trim_start(turns, counts, budget - context.summary_tokens))
    limit = summary.token_limit(budget)
    cut = summary_cut(turns, counts, budget, context.summary_tokens,
                      backend.count_tokens("system", summary.SHOWN_AS, model) + limit)
    if cut:
        context.refresh = _refresh(backend, model, previous, turns[:cut], counts[:cut], limit)
    return context.keep(cut)


def build_context(
    chat: Chat,
    history: History,
    text: str,
    backend: Backend,
    params: GenerationParams,
    *,
    max_output_tokens: int,
) -> ChatMessages:
    """The messages :func:`plan_context` shows the model, writing no new summary."""
    return plan_context(chat, history, text, backend, params,
                        max_output_tokens=max_output_tokens, summarize=False).messages


def _refresh(
    backend: Backend,
    model: str,
    previous: Message | None,
    turns: list[Message],
    counts: list[int],
    limit: int,
) -> Refresh:
    """The next summary: the previous one plus ``turns``, or the newest of them that fit one
    request (a long chat switched to ``summarize`` loses its oldest turns, as with trim)."""
    fixed = sum(backend.count_tokens(m["role"], m["content"], model)
                for m in summary.request(previous, []))
    room = backend.context_window(model) - limit - ANSWER_PRIMER_TOKENS - fixed
    if room < summary.MIN_TRANSCRIPT_TOKENS:
        raise ContextTooLong("the model's context window is too small to write a summary in; "
                             "use the 'trim' context policy")
    first = newest_that_fit(counts, room)
    taken = turns[first:]
    if not taken:  # one message longer than a whole request: its beginning
        last = turns[-1]
        keep = max(1, len(last.content) * (room - 8) // counts[-1])
        taken = [replace(last, content=last.content[:keep] + " …")]
    return Refresh(previous, taken, covers_seq=turns[-1].seq, max_tokens=limit)


def _recent_turns(
    history: History, after: int, backend: Backend, model: str, *, limit: int | None
) -> tuple[list[Message], list[int], list[dict[str, str]]]:
    """The history's turns after seq ``after`` (summaries left out) and their tokens, oldest
    first: all of them, or, with a ``limit``, the newest up to the first that takes their
    total past it, which is as far back as trimming can look. So a turn costs the same
    whatever the chat's length, and older messages are never even counted."""
    tokens = history.tokens
    newest = len(tokens)
    while newest and tokens[newest - 1] is None:  # the last turn's rows, not counted yet
        newest -= 1
        _count(history, newest, backend, model)
    if after == 0 and not history.summaries and None not in tokens:
        counted: list[int] = tokens  # type: ignore[assignment]  # no None left
        if limit is None or sum(counted) <= limit:
            # all of it, at list-copy speed
            return list(history.messages), list(counted), list(history.shown)
    turns: list[Message] = []
    counts: list[int] = []
    views: list[dict[str, str]] = []
    total = 0
    for index in range(len(history.messages) - 1, -1, -1):
        message = history.messages[index]
        if message.seq <= after or (limit is not None and total > limit):
            break
        if message.role is not Role.SYSTEM:
            turns.append(message)
            counts.append(_count(history, index, backend, model))
            views.append(history.shown[index])
            total += counts[-1]
    turns.reverse()
    counts.reverse()
    views.reverse()
    return turns, counts, views


def _count(history: History, index: int, backend: Backend, model: str) -> int:
    """The tokens of one history message as it is shown, counted once and cached."""
    count = history.tokens[index]
    if count is None:
        message = history.messages[index]
        shown = summary.shown(message) if message.role is Role.SYSTEM else message.as_openai()
        count = history.tokens[index] = backend.count_tokens(
            shown["role"], shown["content"], model)
    return count


def _latest_summary(history: History) -> int | None:
    """Index of the newest summary row in the history, if any."""
    for index in range(len(history.messages) - 1, -1, -1):
        message = history.messages[index]
        if message.role is Role.SYSTEM and message.covers_seq is not None:
            return index
    return None
