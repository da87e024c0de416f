"""Automatic chat titles: after a chat's first exchange its own model names it, in the
background, so no turn ever waits for a title.

A title call is not a turn: it is not stored as a message and its tokens are not added to
the chat's counters nor to :meth:`usage` (which counts answered turns). It is small and
bounded: the first exchange, each side cut to ``EXCERPT_CHARS``, and ``TITLE_PARAMS``.
"""

from __future__ import annotations

import asyncio
import logging
import re

from chatsessions.engine.model_call import ModelCalls
from chatsessions.store import Store
from chatsessions.types import GenerationParams, Message, Role, TurnStatus

log = logging.getLogger("chatsessions.engine.titles")

#: Only a chat's early answers can be its first; later ones never cost a lookup.
FIRST_EXCHANGE_MAX_SEQ = 10
TITLE_MAX_WORDS = 8
TITLE_MAX_CHARS = 80
EXCERPT_CHARS = 1000
TITLE_PROMPT = (
    "Write a short title, at most six words, for the conversation below. "
    "Answer with the title only, without quotes."
)
TITLE_PARAMS = GenerationParams(max_tokens=24, temperature=0.2)
#: How long ``close()`` waits by default for titles still being written.
TITLE_GRACE = 5.0

_LABEL = re.compile(r"^\s*(?:chat\s+)?title\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'`*#“”‘’«» "


def title_request(user: str, answer: str) -> list[dict[str, str]]:
    """The messages a title is asked with (public so tests can predict the answer)."""
    excerpt = (f"User: {user[:EXCERPT_CHARS]}\n\n"
               f"Assistant: {answer[:EXCERPT_CHARS]}")
    return [{"role": "system", "content": TITLE_PROMPT},
            {"role": "user", "content": excerpt}]


def clean_title(text: str) -> str | None:
    """A model's answer made into a title: first non-blank line, no "Title:" label, quotes
    or final punctuation, at most ``TITLE_MAX_WORDS`` words; None if nothing is left."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = "".join(ch for ch in line if ch.isprintable())
    line = _LABEL.sub("", line).strip(_QUOTES).rstrip(".!?:;, ").strip(_QUOTES)
    title = " ".join(line.split()[:TITLE_MAX_WORDS])[:TITLE_MAX_CHARS].strip()
    return title or None


class TitleWriter:
    """The background title tasks of one runtime: started after an answer, awaited for a
    grace period (then cancelled) when the runtime closes. A failure is only logged."""

    def __init__(self, store: Store, models: ModelCalls, *, enabled: bool) -> None:
        self._store = store
        self._models = models
        self._enabled = enabled
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def after_answer(self, tenant_id: str, answer: Message) -> None:
        """On the turn's path, so it only schedules: the lookup and the model call happen
        in a task of their own."""
        if (not self._enabled or answer.seq > FIRST_EXCHANGE_MAX_SEQ
                or answer.status is not TurnStatus.OK):
            return
        task = asyncio.create_task(self._run(tenant_id, answer),
                                   name=f"chatsessions title {answer.chat_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace: float) -> None:
        """Let titles being written finish within ``grace`` seconds, cancel the rest."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=max(grace, 0.0))
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _run(self, tenant_id: str, answer: Message) -> None:
        try:
            await write_title(self._store, self._models, tenant_id, answer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("no automatic title for chat %s: %s", answer.chat_id,
                        f"{type(exc).__name__}: {exc}")


async def write_title(
    store: Store, models: ModelCalls, tenant_id: str, answer: Message
) -> str | None:
    """Title the chat if ``answer`` is its first answer and it has no title yet; the title
    is stored only if the chat is still untitled then (the user's own title wins)."""
    chat = await store.get_chat(answer.chat_id, tenant_id)
    if chat is None or chat.title is not None:
        return None
    rows = [m for m in await store.messages(chat.id, limit=answer.seq)
            if m.seq <= answer.seq and m.status is TurnStatus.OK]
    if [m.seq for m in rows if m.role is Role.ASSISTANT] != [answer.seq]:
        return None  # not the first exchange
    user = next((m for m in reversed(rows) if m.role is Role.USER), None)
    if user is None:
        return None
    backend = models.backend(chat.backend)
    if models.circuit(backend.name).state != "closed":
        return None  # the backend is failing: turns need it more than titles do
    # a one-off call, not the chat's conversation: its saved model state stays
    completion = await models.complete(
        backend, title_request(user.content, answer.content), TITLE_PARAMS, chat.model)
    title = clean_title(completion.text)
    if title is None or not await store.set_title_if_unset(chat.id, tenant_id, title):
        return None
    log.debug("chat %s titled (%d prompt, %d completion tokens, not counted in usage)",
              chat.id, completion.usage.prompt_tokens, completion.usage.completion_tokens)
    return title
