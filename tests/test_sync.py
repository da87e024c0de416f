"""The synchronous facade, used exactly the way the tutorial used its functions."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest

from chatsessions import (
    AsyncChatSessions,
    BackendError,
    ChatNotFound,
    ChatSessions,
    Message,
    Role,
    TurnStatus,
)
from chatsessions.keys import ApiKeys, AsyncApiKeys
from chatsessions.prompts import DEMO_CHATS
from chatsessions.testing import FakeLLMServer, Fault
from tests.procs import service_env


@pytest.fixture
def chats(settings_kwargs: dict[str, object]) -> ChatSessions:
    sessions = ChatSessions(**settings_kwargs)  # type: ignore[arg-type]
    yield sessions  # type: ignore[misc]
    sessions.close()


def test_tutorial_verbatim(chats: ChatSessions, fake_llm: FakeLLMServer) -> None:
    chat_id1 = chats.create_chat()
    first = chats.send_message(chat_id1, DEMO_CHATS[0][0])
    follow = chats.send_message(chat_id1, DEMO_CHATS[0][1])
    assert first == FakeLLMServer.answer_for(fake_llm.chat_histories()[0])
    assert follow == FakeLLMServer.answer_for(fake_llm.chat_histories()[1])
    with pytest.raises(ValueError, match="Chat session not found!"):
        chats.send_message("nope", "hi")
    with pytest.raises(ChatNotFound):
        chats.history("nope")


def test_streaming_is_a_plain_iterator(chats: ChatSessions) -> None:
    chat_id = chats.create_chat()
    deltas = list(chats.stream_message(chat_id, "stream me"))
    assert len(deltas) > 1
    assert chats.history(chat_id)[-1].content == "".join(deltas)


def test_breaking_out_of_a_stream_fails_the_turn_cleanly(chats: ChatSessions) -> None:
    chat_id = chats.create_chat()
    for _ in chats.stream_message(chat_id, "one two three four five"):
        break
    rows = chats.history(chat_id, include_failed=True)
    assert rows[1].status.value == "failed"
    chats.send_message(chat_id, "works again")


def test_usable_from_many_threads(chats: ChatSessions, fake_llm: FakeLLMServer) -> None:
    ids = [chats.create_chat() for _ in range(4)]
    errors: list[BaseException] = []

    def talk(chat_id: str) -> None:
        try:
            for n in range(3):
                chats.send_message(chat_id, f"{chat_id} turn {n}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=talk, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for chat_id in ids:
        history = chats.history(chat_id)
        assert [m.content for m in history[1::2]] == [f"{chat_id} turn {n}" for n in range(3)]


def test_closed_instance_refuses_calls(settings_kwargs: dict[str, object]) -> None:
    with ChatSessions(**settings_kwargs) as chats:  # type: ignore[arg-type]
        chats.create_chat()
    with pytest.raises(RuntimeError, match="closed"):
        chats.create_chat()


def test_the_facade_runs_its_private_loop_on_uvloop_where_installed(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")
    with ChatSessions(database_url=f"sqlite:///{tmp_path / 'loop.db'}", auto_title=False) as chats:
        assert isinstance(chats._runner.loop, uvloop.Loop)
        assert chats.list_chats() == []


# the facade is the async API's exact twin ---------------------------------------------


def public_methods(cls: type, *, constructor: bool = True) -> dict[str, Callable[..., Any]]:
    """The class's public methods (properties and plain attributes left out), and
    ``__init__`` where the constructor takes the same arguments too."""
    found = {name: getattr(cls, name) for name in dir(cls)
             if not name.startswith("_") and inspect.isfunction(getattr(cls, name))}
    return {**found, "__init__": cls.__init__} if constructor else found


def as_sync(annotation: Any) -> Any:
    """What an async annotation becomes on the sync side: a generator an iterator, the
    async sessions class the sync one (an ``async def``'s annotation is already what
    awaiting it gives)."""
    if get_origin(annotation) in (AsyncGenerator, AsyncIterator):
        return Iterator[get_args(annotation)[0]]  # type: ignore[valid-type]
    return ChatSessions if annotation is AsyncChatSessions else annotation


def shape(method: Callable[..., Any], *, mapped: bool) -> tuple[Any, ...]:
    signature = inspect.signature(method, eval_str=True)
    fix = as_sync if mapped else (lambda a: a)
    # a leading underscore marks a parameter as the library's own, not the API's
    params = [(p.name, p.kind, p.default, fix(p.annotation))
              for p in signature.parameters.values() if not p.name.startswith("_")]
    return (params, fix(signature.return_annotation), method.__doc__)


def drift(async_cls: type, sync_cls: type, *, constructor: bool = True) -> list[str]:
    """How ``sync_cls`` differs from the twin of ``async_cls``: one line per difference."""
    aio = public_methods(async_cls, constructor=constructor)
    sync = public_methods(sync_cls, constructor=constructor)
    problems = [f"{name}: no sync twin" for name in sorted(aio.keys() - sync.keys())]
    problems += [f"{name}: not in the async API" for name in sorted(sync.keys() - aio.keys())]
    for name in sorted(aio.keys() & sync.keys()):
        if inspect.iscoroutinefunction(sync[name]) or inspect.isasyncgenfunction(sync[name]):
            problems.append(f"{name}: the twin is async")
        want, got = shape(aio[name], mapped=True), shape(sync[name], mapped=False)
        for part, wanted, actual in zip(("parameters", "return", "docstring"), want, got,
                                        strict=True):
            if part == "docstring" and name == "__init__":
                continue  # each class says what it is
            if wanted != actual:
                problems.append(f"{name}: {part} differ: {wanted!r} != {actual!r}")
    return problems


def test_every_async_method_has_an_exact_sync_twin() -> None:
    assert drift(AsyncChatSessions, ChatSessions) == []
    # the keys resource too (its sync side is built by the facade, from the async one)
    assert drift(AsyncApiKeys, ApiKeys, constructor=False) == []


def test_the_twin_check_sees_drift() -> None:
    """The comparison above can fail: a facade that drifted the old ways is caught."""

    class Drifted(ChatSessions):
        delete_message = None  # type: ignore[assignment]  # a twin missing

        def send(self, chat_id: str, text: str, **kwargs: Any) -> Message:  # type: ignore[override]
            """Run one turn and return the stored assistant message (with usage)."""
            raise NotImplementedError

        def sweep(self) -> int:
            raise NotImplementedError

        def extra(self) -> None:
            raise NotImplementedError

    problems = drift(AsyncChatSessions, Drifted)
    assert [p.split(":")[0] for p in problems] == [
        "delete_message", "extra", "send", "send", "sweep"]
    assert problems[2].startswith("send: parameters differ")
    assert problems[3].startswith("send: docstring differ")  # the async one says more
    assert problems[4].startswith("sweep: docstring differ")


def test_a_wrong_keyword_fails_at_the_call(chats: ChatSessions) -> None:
    chat_id = chats.create_chat()
    calls: list[Callable[[], object]] = [
        lambda: chats.stream_message(chat_id, "hi", temperature=0.1),  # type: ignore[call-arg]
        lambda: chats.stream_retry(chat_id, if_message_count=1),  # type: ignore[call-arg]
        lambda: chats.send_message(chat_id, "hi", param={}),  # type: ignore[call-arg]
        lambda: chats.aio.stream(chat_id, "hi", params_={}),  # type: ignore[call-arg]
    ]
    for call in calls:
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            call()  # no iterator read: the call itself refuses
    assert chats.history(chat_id) == chats.history(chat_id)[:1]  # nothing was sent


# every sync method, called ------------------------------------------------------------


class Recorder:
    """Passes every attribute through, noting which were used."""

    def __init__(self, target: ChatSessions) -> None:
        self.target = target
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.used.add(name)
        return getattr(self.target, name)


def test_every_sync_method_works(chats: ChatSessions, fake_llm: FakeLLMServer) -> None:
    """Each method once, the way a script would call it, on SQLite and on PostgreSQL."""
    lib: Any = Recorder(chats)
    lib.open()  # already open: nothing happens
    assert lib.get_backend().name == "openai"

    # chats
    chat_id = lib.create_chat("Be brief.", title="orders", metadata={"team": "a"})
    assert lib.get_chat(chat_id).title == "orders"
    assert lib.update_chat(chat_id, title="parcels").title == "parcels"
    assert [c.id for c in lib.list_chats(title_contains="parcel")] == [chat_id]
    assert lib.archive_chat(chat_id).archived_at is not None
    assert [c.id for c in lib.list_chats(archived=True)] == [chat_id]
    assert lib.unarchive_chat(chat_id).archived_at is None

    # turns
    answer = lib.send(chat_id, "first question")
    assert isinstance(answer, Message)
    assert answer.content == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    assert lib.send_message(chat_id, "second question") == lib.history(chat_id)[-1].content
    *deltas, streamed = list(lib.stream(chat_id, "third question"))
    assert isinstance(streamed, Message)
    assert "".join(deltas) == streamed.content
    assert "".join(lib.stream_message(chat_id, "fourth question")) == \
        lib.history(chat_id)[-1].content

    # failed turns, asked again
    fake_llm.inject(Fault.status(500))
    with pytest.raises(BackendError):
        lib.send(chat_id, "lost once")
    retried = lib.retry(chat_id)
    assert fake_llm.chat_histories()[-1][-1]["content"] == "lost once"
    assert retried.content == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    fake_llm.inject(Fault.status(500))
    with pytest.raises(BackendError):
        lib.send(chat_id, "lost twice")
    assert isinstance(list(lib.stream_retry(chat_id))[-1], Message)

    # tool calls: waiting, outputs (plain and streamed), cancelled
    order = {"name": "lookup", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}}}
    (call,) = lib.send(chat_id, "order 42?", tools=[order]).tool_calls or ()
    assert lib.pending_tool_calls(chat_id) == [call]
    assert "42: shipped" in lib.send_tool_results(chat_id, {call.id: "42: shipped"}).content
    *_, waiting = list(lib.stream(chat_id, "order 43?", tools=[order]))
    assert isinstance(waiting, Message)
    (call,) = waiting.tool_calls or ()
    *_, told = list(lib.stream_tool_results(chat_id, {call.id: "43: lost"}))
    assert isinstance(told, Message)
    assert "43: lost" in told.content
    lib.send(chat_id, "order 44?", tools=[order])
    assert [c.name for c in lib.cancel_tool_calls(chat_id)] == ["lookup"]
    lib.send(chat_id, "never mind")

    # answers again, edits, forks
    replaced = lib.history(chat_id)[-1]
    regenerated = lib.regenerate(chat_id)
    assert regenerated.seq > replaced.seq
    *_, again = list(lib.stream_regenerate(chat_id))
    assert isinstance(again, Message)
    kept = lib.history(chat_id, include_replaced=True)
    assert [m.seq for m in kept if m.status is TurnStatus.REPLACED] == [replaced.seq,
                                                                        regenerated.seq]
    fork_id, edited = lib.edit_message(chat_id, 1, "first question, edited")
    assert lib.get_chat(fork_id).parent_id == chat_id
    assert edited.content == lib.history(fork_id)[-1].content
    copy_id = lib.fork_chat(chat_id, up_to_seq=2)
    assert [m.content for m in lib.history(copy_id)[1:]] == ["first question", answer.content]

    # history as it is
    added = lib.append_messages(copy_id, [(Role.USER, "typed"), (Role.ASSISTANT, "noted")])
    assert [(m.role, m.content) for m in added] == [(Role.USER, "typed"),
                                                    (Role.ASSISTANT, "noted")]
    assert lib.delete_message(copy_id, added[0].seq) is True
    assert lib.delete_message(copy_id, added[0].seq) is False
    assert [m.content for m in lib.history(copy_id)[3:]] == ["noted"]

    # answers and completions that store nothing
    count = lib.get_chat(copy_id).message_count
    unstored = lib.answer(copy_id, "just asking")
    assert unstored.content == FakeLLMServer.answer_for(fake_llm.chat_histories()[-1])
    *parts, streamed_answer = list(lib.stream_answer(copy_id, "just asking"))
    assert "".join(parts) == streamed_answer.content == unstored.content
    one_off = [{"role": "user", "content": "hello"}]
    completion = lib.complete(one_off)
    assert completion.text == FakeLLMServer.answer_for(one_off)
    *pieces, last = list(lib.stream_complete(one_off))
    assert "".join(pieces) == last.text == completion.text
    assert lib.get_chat(copy_id).message_count == count

    # reading: pages, one message, health, Markdown
    stored = lib.messages(copy_id, after_seq=0, limit=None)
    assert [m.seq for m in lib.messages(copy_id, after_seq=stored[0].seq, limit=1)] == \
        [stored[1].seq]
    assert lib.get_message(copy_id, stored[-1].seq) == stored[-1]
    assert lib.get_message(copy_id, added[0].seq) is None
    assert lib.ping() is None
    assert "noted" in lib.export_markdown(copy_id)

    # usage, search, export and import
    # every answer the model gave (two requests failed, four were not stored), and the one
    # appended
    assert lib.usage().turns == len(fake_llm.chat_histories()) - 2 - 4 + 1
    assert {hit.chat_id for hit in lib.search("fourth")} == {chat_id}
    document = lib.export_chat(chat_id)
    imported = lib.import_chat(document)
    assert lib.history(imported, include_failed=True) != []
    assert [m.content for m in lib.history(imported, include_failed=True)[1:]] == \
        [m.content for m in lib.history(chat_id, include_failed=True)[1:]]

    # tenants, housekeeping, the end
    other = lib.for_tenant("someone-else")
    assert other.tenant_id == "someone-else"
    assert other.list_chats() == []
    with pytest.raises(ChatNotFound):
        other.get_chat(chat_id)
    mine = other.create_chat()
    assert [c.id for c in other.list_chats()] == [mine]
    assert mine not in {c.id for c in lib.list_chats()}
    assert lib.sweep() == 0
    lib.delete_chat(imported)
    with pytest.raises(ChatNotFound):
        lib.get_chat(imported)
    lib.close()
    with pytest.raises(RuntimeError, match="closed"):
        other.list_chats()  # a view shares the facade's loop thread and store

    assert sorted(public_methods(ChatSessions).keys() - {"__init__"} - lib.used) == []


# leaving without close() --------------------------------------------------------------

TUTORIAL = """
from chatsessions import ChatSessions

chats = ChatSessions()
chat_id = chats.create_chat()
print(chats.send_message(chat_id, "Can you help me track my order?"))
print(chats.send_message(chat_id, "It is order 1234."))
"""


def run_script(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter showing every warning (ResourceWarning too)."""
    return subprocess.run([sys.executable, "-W", "default", "-c", script], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=240, check=False)


def test_the_tutorial_without_close_exits_silently_and_keeps_everything(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    url = f"sqlite:///{tmp_path / 'tutorial.db'}"
    env = service_env(url, fake_llm.base_url, "tutorial", auto_title=True)
    done = run_script(TUTORIAL, env, tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    with ChatSessions(database_url=url, backend="openai", openai_base_url=fake_llm.base_url,
                      openai_api_key="x", auto_title=False) as chats:
        [chat] = chats.list_chats()
        history = chats.history(chat.id, include_failed=True)
        assert [m.content for m in history[1::2]] == [
            "Can you help me track my order?", "It is order 1234."]
        assert all(m.status is TurnStatus.OK for m in history)
        assert done.stdout.splitlines() == [m.content for m in history[2::2]]
        assert chat.title  # the title written in the background was waited for


@pytest.mark.local_model
def test_the_embedded_model_leaves_no_warning_at_exit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tutorial.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSESSIONS_")}
    env.update({"CHATSESSIONS_DATABASE_URL": url, "CHATSESSIONS_BACKEND": "local",
                "CHATSESSIONS_MAX_OUTPUT_TOKENS": "8", "CHATSESSIONS_AUTO_TITLE": "0"})
    done = run_script(TUTORIAL, env, tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    with ChatSessions(database_url=url, backend="local", auto_title=False) as chats:
        [chat] = chats.list_chats()
        assert [m.status for m in chats.history(chat.id, include_failed=True)[1:]] == \
            [TurnStatus.OK] * 4
