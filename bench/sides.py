"""The tutorial's in-memory baseline and chatsessions itself, as lockstep sides.

Both call the same fake model with the same request (``max_tokens`` included: 512 is what
OpenAIBackend asks for when a chat sets none), and both time the model call with a
ModelTimer: around ``chat.completions.create`` here, around ``Backend.complete`` in ours.
"""

from __future__ import annotations

import uuid

import openai

from bench.harness import MODEL, SYSTEM_PROMPT, TimedBackend
from bench.workload import AsyncSide, Side, timed
from chatsessions import AsyncChatSessions, ChatSessions, Settings
from chatsessions.backends.openai import OpenAIBackend

MAX_TOKENS = 512
Messages = list[dict[str, str]]


def _answer(response: openai.types.chat.ChatCompletion) -> str:
    return (response.choices[0].message.content or "").strip()


class BaselineSync(Side):
    """The tutorial: ``chat_id -> list of messages`` in a dict, the official sync client."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
        self.chats: dict[str, Messages] = {}

    def open(self) -> None:
        self._turn(self._new(), "warm-up")

    def _new(self) -> str:
        chat_id = str(uuid.uuid4())
        self.chats[chat_id] = [{"role": "system", "content": SYSTEM_PROMPT}]
        return chat_id

    def _turn(self, chat_id: str, text: str) -> str:
        history = self.chats[chat_id]
        history.append({"role": "user", "content": text})
        with self.timer.time():
            response = self.client.chat.completions.create(
                model=MODEL, messages=history, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
        answer = _answer(response)
        history.append({"role": "assistant", "content": answer})
        return answer

    def new_chat(self) -> tuple[str, float]:
        return timed(self._new)

    def send(self, chat_id: str, text: str) -> tuple[str, float]:
        return timed(lambda: self._turn(chat_id, text))

    def close(self) -> None:
        self.client.close()


class BaselineAsync(AsyncSide):
    """The same baseline with ``openai.AsyncOpenAI``, the fair partner of AsyncChatSessions."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url
        self.chats: dict[str, Messages] = {}

    def open(self) -> None:
        async def make() -> openai.AsyncOpenAI:  # the client binds to the running loop
            return openai.AsyncOpenAI(base_url=self.base_url, api_key="bench", max_retries=0)

        self.client = self.run(make())
        self.run(self._turn(self._new(), "warm-up"))

    def _new(self) -> str:
        chat_id = str(uuid.uuid4())
        self.chats[chat_id] = [{"role": "system", "content": SYSTEM_PROMPT}]
        return chat_id

    async def _turn(self, chat_id: str, text: str) -> str:
        history = self.chats[chat_id]
        history.append({"role": "user", "content": text})
        with self.timer.time():
            response = await self.client.chat.completions.create(
                model=MODEL, messages=history, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
        answer = _answer(response)
        history.append({"role": "assistant", "content": answer})
        return answer

    def new_chat(self) -> tuple[str, float]:
        return timed(self._new)

    def send(self, chat_id: str, text: str) -> tuple[str, float]:
        return self.run(self.timed(self._turn(chat_id, text)))

    def close(self) -> None:
        self.run(self.client.close())
        super().close()


def settings(base_url: str, database_url: str) -> Settings:
    """Automatic titles off: the baselines make no such extra model call."""
    return Settings(
        database_url=database_url, backend="openai", model=MODEL, openai_base_url=base_url,
        openai_api_key="bench", max_retries=0, system_prompt=SYSTEM_PROMPT, auto_title=False,
    )


class OursSync(Side):
    """``ChatSessions``, the tutorial's sync API, with the real OpenAI backend timed."""

    def __init__(self, base_url: str, database_url: str) -> None:
        super().__init__()
        self.settings = settings(base_url, database_url)

    def open(self) -> None:
        backend = TimedBackend(OpenAIBackend(self.settings), self.timer)
        self.sessions = ChatSessions(self.settings, backend=backend)
        self.sessions.send_message(self.sessions.create_chat(), "warm-up")

    def new_chat(self) -> tuple[str, float]:
        return timed(self.sessions.create_chat)

    def send(self, chat_id: str, text: str) -> tuple[str, float]:
        return timed(lambda: self.sessions.send_message(chat_id, text))

    def close(self) -> None:
        self.sessions.close()


class OursAsync(AsyncSide):
    """``AsyncChatSessions`` used directly: no event-loop thread in between."""

    def __init__(self, base_url: str, database_url: str) -> None:
        super().__init__()
        self.settings = settings(base_url, database_url)

    def open(self) -> None:
        backend = TimedBackend(OpenAIBackend(self.settings), self.timer)
        self.sessions = AsyncChatSessions(self.settings, backend=backend)
        self.run(self.sessions.open())
        self.run(self.sessions.send_message(self.run(self.sessions.create_chat()), "warm-up"))

    def new_chat(self) -> tuple[str, float]:
        return self.run(self.timed(self.sessions.create_chat()))

    def send(self, chat_id: str, text: str) -> tuple[str, float]:
        return self.run(self.timed(self.sessions.send_message(chat_id, text)))

    def close(self) -> None:
        self.run(self.sessions.close())
        super().close()
