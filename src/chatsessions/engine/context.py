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
from typing import Any

from chatsessions.backends import Backend
from chatsessions.backends.base import ChatMessages
from chatsessions.engine import summary
from chatsessions.engine.cache import History
from chatsessions.engine.summary import Refresh
from chatsessions.errors import BackendError, ContextTooLong
from chatsessions.types import (
    Chat,
    ContentPart,
    ContextPolicy,
    GenerationParams,
    Message,
    Role,
)

log = logging.getLogger(__name__)

#: Tokens the chat template spends to open the assistant's answer.
ANSWER_PRIMER_TOKENS = 3
#: What one image is counted as in the window (OpenAI's low-detail cost; the real cost
#: is the provider's to know, and it refuses what does not fit).
IMAGE_TOKENS = 85


def trim_start(history: Sequence[Message], counts: Sequence[int], budget: int) -> int:
    """Index of the first history message to send so the total fits ``budget`` tokens.

    ``history`` is the chat's ok messages ending with the turn in progress: the new user
    message, or, in a tool round, the user message with the calls and outputs after it.
    Only whole turns are dropped: the kept part always starts at a user message, so an
    answer's tool calls and their outputs are kept or dropped together; the turn in
    progress is always kept (if it alone is too big, that is the caller's error).
    """
    if not history:
        return 0
    last = len(history) - 1
    while last > 0 and history[last].role is not Role.USER:
        last -= 1
    current = counts[-1] if last == len(history) - 1 else sum(counts[last:])
    if current > budget:
        raise ContextTooLong(
            f"the message takes {current} tokens but only {max(budget, 0)} fit in the "
            "model's context window next to the system prompt and the reserved answer"
        )
    if history[0].role is Role.USER and sum(counts) <= budget:
        return 0  # everything fits: no need to walk it
    total = current
    start = last
    for index in range(last - 1, -1, -1):
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
    views: list[dict[str, Any]]
    summary: dict[str, str] | None = None
    summary_tokens: int = 0
    refresh: Refresh | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
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
    text: str | None,
    backend: Backend,
    params: GenerationParams,
    *,
    max_output_tokens: int,
    summarize: bool = True,
    outputs: Sequence[Message] = (),
    parts: tuple[ContentPart, ...] | None = None,
) -> Context:
    """The context for a new message ``text``, as the chat's context policy says.

    ``trim``: the system prompt and the newest whole turns that fit the window less the
    reserved answer. ``none``: everything, or ContextTooLong. ``summarize``: the latest
    summary in place of the turns it covers, then the newest turns that fit; when trimming
    would drop turns the summary does not cover, ``refresh`` says what the next summary
    must take in (with ``summarize=False`` those turns are trimmed instead). Raises
    ContextTooLong before anything is stored. Summary rows are never sent as turns.
    ``max_output_tokens`` is the answer's reserve when ``params`` set none.

    A tool round has no new text (``text=None``): ``outputs``, the tool outputs not yet
    stored, follow the history instead. Whatever the history holds, the model is never
    shown a tool call without its output or an output without its call (:func:`paired`).
    ``parts``: the new message's content as parts, when it holds images.
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
    new = [Message(chat.id, 0, Role.USER, text, parts=parts)] if text is not None else list(outputs)
    new_views = [m.as_openai() for m in new]
    new_counts = [shown_tokens(backend, view, model) for view in new_views]
    turns, counts, views = _recent_turns(history, after, backend, model, limit=None
                                         if policy is ContextPolicy.NONE
                                         else budget - sum(new_counts))
    turns.extend(new)
    counts.extend(new_counts)
    views.extend(new_views)
    context = Context({"role": "system", "content": chat.system_prompt}, system_tokens,
                      budget, turns, counts, views)
    if history.tool_rows or outputs:
        context = paired(context)
    if policy is ContextPolicy.NONE:
        check_fits(counts, budget)
        return context
    if policy is ContextPolicy.TRIM:
        return context.keep(trim_start(context.turns, context.counts, budget))
    if previous is not None and latest is not None:
        context.summary = summary.shown(previous)
        context.summary_tokens = _count(history, latest, backend, model)
    if not summarize:
        return context.keep(trim_start(context.turns, context.counts,
                                       budget - context.summary_tokens))
    limit = summary.token_limit(budget)
    turns, counts = context.turns, context.counts
    cut = summary_cut(turns, counts, budget, context.summary_tokens,
                      backend.count_tokens("system", summary.SHOWN_AS, model) + limit)
    if cut:
        context.refresh = _refresh(backend, model, previous, turns[:cut], counts[:cut], limit)
    return context.keep(cut)


def build_context(
    chat: Chat,
    history: History,
    text: str | None,
    backend: Backend,
    params: GenerationParams,
    *,
    max_output_tokens: int,
) -> ChatMessages:
    """The messages :func:`plan_context` shows the model, writing no new summary."""
    return plan_context(chat, history, text, backend, params,
                        max_output_tokens=max_output_tokens, summarize=False).messages


def paired(context: Context) -> Context:
    """The context without what would show the model a call without its output or an
    output without its call: outputs that answer no call of the assistant message before
    them are left out, and calls left without an output are taken off their message (the
    message too, when it has no text). A well-formed history loses nothing; one left
    uneven (a deleted output, an import) still gives the model a valid conversation."""
    turns: list[Message] = []
    counts: list[int] = []
    views: list[dict[str, Any]] = []
    waiting: dict[str, bool] = {}  # the calls of the last answer: answered yet?
    asked = -1  # where that answer is in the kept lists
    for message, count, view in zip(context.turns, context.counts, context.views,
                                    strict=True):
        if message.role is Role.TOOL:
            if waiting.get(message.tool_call_id or "") is False:
                waiting[message.tool_call_id or ""] = True
                turns.append(message)
                counts.append(count)
                views.append(view)
            continue
        if waiting:
            asked = _drop_unanswered(turns, counts, views, asked, waiting)
        waiting = {}
        if message.role is Role.ASSISTANT and message.tool_calls:
            waiting = {call.id: False for call in message.tool_calls}
            asked = len(turns)
        turns.append(message)
        counts.append(count)
        views.append(view)
    if waiting:
        _drop_unanswered(turns, counts, views, asked, waiting)
    context.turns, context.counts, context.views = turns, counts, views
    return context


def _drop_unanswered(turns: list[Message], counts: list[int], views: list[dict[str, Any]],
                     asked: int, waiting: dict[str, bool]) -> int:
    """Take the calls still waiting off the answer at ``asked``."""
    if all(waiting.values()):
        return asked
    answer = turns[asked]
    kept = tuple(call for call in answer.tool_calls or () if waiting[call.id])
    answer = replace(answer, tool_calls=kept or None)
    if not kept and not answer.content:
        del turns[asked], counts[asked], views[asked]
        return -1
    turns[asked], views[asked] = answer, answer.as_openai()
    return asked


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
) -> tuple[list[Message], list[int], list[dict[str, Any]]]:
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
    views: list[dict[str, Any]] = []
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
        shown = summary.shown(message) if message.role is Role.SYSTEM else history.shown[index]
        count = history.tokens[index] = shown_tokens(backend, shown, model)
    return count


def shown_tokens(backend: Backend, shown: dict[str, Any], model: str) -> int:
    """The tokens of one message as the model is shown it: its text, and the name and
    arguments of each call it makes (the provider serializes those into the prompt)."""
    content = shown["content"] or ""
    if isinstance(content, list):  # parts: their text, and a flat guess per image
        text = "\n".join(part.get("text", "") for part in content if part["type"] == "text")
        images: int = sum(part["type"] == "image_url" for part in content)
        tokens = backend.count_tokens(shown["role"], text, model) + IMAGE_TOKENS * images
    else:
        tokens = backend.count_tokens(shown["role"], content, model)
    for call in shown.get("tool_calls") or ():
        function = call["function"]
        tokens += backend.count_tokens("tool", function["name"] + function["arguments"],
                                       model)
    return tokens


def _latest_summary(history: History) -> int | None:
    """Index of the newest summary row in the history, if any."""
    for index in range(len(history.messages) - 1, -1, -1):
        message = history.messages[index]
        if message.role is Role.SYSTEM and message.covers_seq is not None:
            return index
    return None
