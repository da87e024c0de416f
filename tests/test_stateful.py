"""A hypothesis state machine drives the library (create, send, fail, delete, reopen) and
checks it against a plain in-memory model of what must be stored."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from chatsessions import BackendError, ChatNotFound, ChatSessions
from chatsessions.testing import FakeLLMServer, Fault

#: Reproducible examples in CI; CHATSESSIONS_FUZZ_RANDOM=1 explores new ones.
_FIXED = not os.environ.get("CHATSESSIONS_FUZZ_RANDOM")

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1,
               max_size=40).filter(lambda t: t.strip() != "")


@pytest.fixture(scope="module")
def server() -> FakeLLMServer:
    with FakeLLMServer() as fake:
        yield fake  # type: ignore[misc]


class ChatModel(RuleBasedStateMachine):
    fake: FakeLLMServer
    #: How often a rule met a deleted chat, over all examples (its branch must be reached).
    met_deleted = 0

    chats = Bundle("chats")

    def __init__(self) -> None:
        super().__init__()
        self.fake.reset()
        self.dir = Path(tempfile.mkdtemp())
        self.kwargs = {
            "database_url": f"sqlite:///{self.dir / 'chats.db'}", "backend": "openai",
            "model": "fake", "openai_base_url": self.fake.base_url, "openai_api_key": "x",
            "max_retries": 0, "circuit_failures": 1000, "auto_title": False,
        }
        self.lib = ChatSessions(**self.kwargs)  # type: ignore[arg-type]
        self.expected: dict[str, list[tuple[str, str]]] = {}
        self.failed: dict[str, int] = {}
        self.system = self.lib.settings.system_prompt

    def teardown(self) -> None:
        self.lib.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=chats)
    def create(self) -> str:
        chat_id = self.lib.create_chat()
        self.expected[chat_id] = []
        self.failed[chat_id] = 0
        return chat_id

    @rule(chat_id=chats, text=TEXT)
    def send(self, chat_id: str, text: str) -> None:
        if chat_id not in self.expected:
            ChatModel.met_deleted += 1
            with pytest.raises(ChatNotFound):
                self.lib.send_message(chat_id, text)
            return
        answer = self.lib.send_message(chat_id, text)
        seen = [{"role": "system", "content": self.system}] + [
            {"role": r, "content": c} for r, c in self.expected[chat_id]
        ] + [{"role": "user", "content": text}]
        assert answer == FakeLLMServer.answer_for(seen)
        self.expected[chat_id] += [("user", text), ("assistant", answer)]

    @rule(chat_id=chats, text=TEXT)
    def send_failing(self, chat_id: str, text: str) -> None:
        if chat_id not in self.expected:
            with pytest.raises(ChatNotFound):  # refused before the model is asked
                self.lib.send_message(chat_id, text)
            return
        self.fake.inject(Fault.status(500))
        with pytest.raises(BackendError):
            self.lib.send_message(chat_id, text)
        self.failed[chat_id] += 1

    @rule(chat_id=chats)
    def delete(self, chat_id: str) -> None:
        # Deleted ids stay in the bundle, so later rules also try them on a deleted chat.
        if chat_id in self.expected:
            self.lib.delete_chat(chat_id)
            del self.expected[chat_id]
            del self.failed[chat_id]
        else:
            ChatModel.met_deleted += 1
            with pytest.raises(ChatNotFound):
                self.lib.delete_chat(chat_id)

    @rule()
    def reopen(self) -> None:
        """A clean close and a new instance on the same file (crash recovery is proven by
        the kill -9 tests, not here)."""
        self.lib.close()
        self.lib = ChatSessions(**self.kwargs)  # type: ignore[arg-type]

    @invariant()
    def stored_matches_model(self) -> None:
        assert {c.id for c in self.lib.list_chats(limit=1000)} == set(self.expected)
        for chat_id, messages in self.expected.items():
            visible = self.lib.history(chat_id)
            assert [(m.role.value, m.content) for m in visible[1:]] == messages
            everything = self.lib.history(chat_id, include_failed=True)
            failed = [m for m in everything if m.status.value == "failed"]
            assert len(failed) == self.failed[chat_id]
            assert all(m.role.value == "user" and m.error for m in failed)
            assert not [m for m in everything if m.status.value == "pending"]


ChatModel.TestCase.settings = settings(
    max_examples=15, stateful_step_count=12, deadline=None, derandomize=_FIXED,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_library_matches_its_model(server: FakeLLMServer) -> None:
    ChatModel.fake = server
    ChatModel.met_deleted = 0
    server.reset()
    ChatModel.TestCase().runTest()
    assert ChatModel.met_deleted > 0  # sends and deletes on deleted chats were tried
