"""Context policies end to end (trim, summarize, none) and what each answer saw: real
databases, the real fake model (whose request log is exactly what the model was shown),
the live HTTP service and the command line. The pure parts are tested as tables."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatsessions import AsyncChatSessions, BackendError, ContextTooLong, InvalidInput
from chatsessions.engine import summary as summaries
from chatsessions.engine.context import check_fits, newest_that_fit, summary_cut
from chatsessions.store import open_store
from chatsessions.testing import FakeLLMServer, Fault, RecordedRequest
from chatsessions.types import ContextPolicy, Message, Role, TurnStatus
from chatsessions.validation import check_context_policy
from tests.conftest import LiveServer
from tests.test_cli import cli_env, run

#: A window small enough that a dozen turns outgrow it (fake-model tokens are estimated).
SMALL = {"context_window": 600, "max_output_tokens": 100}


def marker(n: int) -> str:
    return f"marker-{n:02d}-x"


def question(n: int) -> str:
    return f"{marker(n)} " + "word " * 30


def is_summary_request(request: RecordedRequest) -> bool:
    return request.messages[0]["content"] == summaries.INSTRUCTION


def answer_requests(fake_llm: FakeLLMServer) -> list[RecordedRequest]:
    return [r for r in fake_llm.requests if not is_summary_request(r)]


def text_of(request: RecordedRequest) -> str:
    return "\n".join(m["content"] for m in request.messages)


# the pure parts, as tables ------------------------------------------------------------


def turns(n: int) -> list[Message]:
    """``n`` finished turns (seqs 1..2n) and the new user message."""
    messages = []
    for index in range(n):
        messages.append(Message("c", 2 * index + 1, Role.USER, "q"))
        messages.append(Message("c", 2 * index + 2, Role.ASSISTANT, "a"))
    return [*messages, Message("c", 0, Role.USER, "new")]


@pytest.mark.parametrize(
    ("n", "counts", "budget", "summary_tokens", "reserve", "cut"),
    [
        (2, [10, 10, 10, 10, 10], 100, 0, 20, 0),  # all fits: no summary
        (2, [10, 10, 10, 10, 10], 50, 0, 20, 0),  # exactly fits
        # the current summary crowds a turn out, and then the rest must fill at most
        # half of what the new summary leaves: more is taken in than the least needed
        (2, [10, 10, 10, 10, 10], 50, 10, 20, 4),
        (4, [10] * 9, 80, 0, 20, 6),
        (4, [10] * 9, 200, 0, 20, 0),
        # a new message bigger than half the room keeps only itself
        (2, [10, 10, 10, 10, 40], 60, 0, 10, 4),
        # an old summary larger than the reserve still makes room for itself
        (3, [10] * 7, 70, 45, 5, 6),
    ],
)
def test_summary_cut(n: int, counts: list[int], budget: int, summary_tokens: int,
                     reserve: int, cut: int) -> None:
    history = turns(n)
    assert len(counts) == len(history)
    assert summary_cut(history, counts, budget, summary_tokens, reserve) == cut
    assert history[cut].role is Role.USER  # whole turns only
    if cut:  # what is kept fits next to a new summary of the reserved size
        assert sum(counts[cut:]) <= budget - max(reserve, 0)


def test_summary_cut_refuses_a_message_that_cannot_fit_next_to_a_summary() -> None:
    with pytest.raises(ContextTooLong):
        summary_cut(turns(1), [10, 10, 45], 50, 10, 10)


@pytest.mark.parametrize(
    ("counts", "budget", "first"),
    [
        ([], 10, 0),
        ([5, 5, 5], 15, 0),
        ([5, 5, 5], 14, 1),
        ([5, 5, 5], 5, 2),
        ([5, 5, 20], 10, 3),  # not even the newest fits
    ],
)
def test_newest_that_fit(counts: list[int], budget: int, first: int) -> None:
    assert newest_that_fit(counts, budget) == first


@pytest.mark.parametrize(("counts", "budget", "fits"),
                         [([1, 2, 3], 6, True), ([1, 2, 3], 5, False), ([], 0, True)])
def test_check_fits(counts: list[int], budget: int, fits: bool) -> None:
    if fits:
        check_fits(counts, budget)
    else:
        with pytest.raises(ContextTooLong, match=r"needs 6 tokens but only 5 fit.*'none'"):
            check_fits(counts, budget)


@pytest.mark.parametrize(("value", "policy"), [
    ("trim", ContextPolicy.TRIM), ("summarize", ContextPolicy.SUMMARIZE),
    (ContextPolicy.NONE, ContextPolicy.NONE), ("none", ContextPolicy.NONE),
])
def test_context_policy_by_name_or_enum(value: object, policy: ContextPolicy) -> None:
    assert check_context_policy(value) is policy


@pytest.mark.parametrize("value", ["Trim", "", None, 3, "x" * 100])
def test_unknown_context_policy_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match="must be one of trim, summarize, none"):
        check_context_policy(value)


@pytest.mark.parametrize(("budget", "limit"), [(100, 32), (800, 100), (100_000, 1024)])
def test_summary_token_limit(budget: int, limit: int) -> None:
    assert summaries.token_limit(budget) == limit


def test_summary_request_and_how_it_is_shown() -> None:
    earlier = Message("c", 9, Role.SYSTEM, "They ordered a lamp.", covers_seq=8)
    taken = [Message("c", 10, Role.USER, "Where is it?"),
             Message("c", 11, Role.ASSISTANT, "On its way.")]
    system, user = summaries.request(earlier, taken)
    assert system == {"role": "system", "content": summaries.INSTRUCTION}
    assert user["role"] == "user"
    assert user["content"] == (
        f"{summaries.REQUEST}\n\nSummary of what came before:\nThey ordered a lamp.\n\n"
        "Conversation:\nUser: Where is it?\n\nAssistant: On its way.")
    assert summaries.request(None, [])[1]["content"] == summaries.REQUEST
    assert summaries.shown(earlier) == {
        "role": "system", "content": summaries.SHOWN_AS + "They ordered a lamp."}


# the library, on SQLite and PostgreSQL ------------------------------------------------------


async def test_summarize_shows_a_summary_in_place_of_the_dropped_turns_and_refreshes_it(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    async with AsyncChatSessions(**{**settings_kwargs, **SMALL}) as chats:  # type: ignore[arg-type]
        # a model of its own: the summaries are asked of the chat's model too
        chat_id = await chats.create_chat("Be brief.", context_policy="summarize",
                                          model="fake-model-b")
        for n in range(14):
            await chats.send_message(chat_id, question(n))
        rows = (await chats.history(chat_id, include_failed=True))[1:]
    assert {r.model for r in fake_llm.requests} == {"fake-model-b"}

    written = [m for m in rows if m.role is Role.SYSTEM]
    assert len(written) >= 2, "the summary is refreshed as the chat grows"
    assert all(m.status is TurnStatus.OK and m.covers_seq is not None for m in written)
    assert [m.covers_seq for m in written] == sorted({m.covers_seq for m in written})
    asked = [r for r in fake_llm.requests if is_summary_request(r)]
    assert len(asked) == len(written)
    by_seq = {m.seq: m for m in rows}

    for index, (summary, request) in enumerate(zip(written, asked, strict=True)):
        covers = summary.covers_seq or 0
        since = (written[index - 1].covers_seq or 0) if index else 0
        newly = [m for m in rows if m.role is not Role.SYSTEM and since < m.seq <= covers]
        # the request took in the previous summary and the turns dropped since
        assert all(m.content in text_of(request) for m in newly)
        if index:
            assert f"Summary of what came before:\n{written[index - 1].content}" in (
                text_of(request))
        # the answer right after it saw the summary, not the turns it stands for
        answer = by_seq[summary.seq + 1]
        assert answer.role is Role.ASSISTANT
        seen = next(r for r in answer_requests(fake_llm)
                    if FakeLLMServer.answer_for(r.messages) == answer.content)
        assert seen.messages[0] == {"role": "system", "content": "Be brief."}
        assert seen.messages[1] == summaries.shown(summary)
        for covered in (m for m in rows if m.role is Role.USER and m.seq <= covers):
            assert covered.content.split()[0] not in text_of(seen)  # its marker
        assert all(m.content not in text_of(seen) for m in rows
                   if m.role is not Role.SYSTEM and m.seq <= covers)
        assert all(s.content not in text_of(seen) for s in written if s is not summary)
        # the turns after the summary are whole, alternating, and end with the question
        roles = [m["role"] for m in seen.messages[2:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        assert answer.context_messages == len(seen.messages)


async def test_a_detached_turn_names_its_answer_after_the_summary_it_wrote(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    """A streamed turn's steps carry the seq its answer gets (the key to follow it again),
    from the first delta on, whether or not the turn wrote a summary before it."""
    async with AsyncChatSessions(**{**settings_kwargs, **SMALL}) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat("Be brief.", context_policy="summarize")
        for n in range(14):
            steps = [step async for step in chats.runs.stream(chat_id, question(n))]
            answer = steps[-1].item
            assert isinstance(answer, Message)
            assert {step.seq for step in steps} == {answer.seq}
        rows = await chats.history(chat_id, include_failed=True)
    assert any(m.role is Role.SYSTEM for m in rows[1:]), "a summary was written"


async def test_every_answer_records_what_it_was_shown(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    async with AsyncChatSessions(**{**settings_kwargs, **SMALL}) as chats:  # type: ignore[arg-type]
        backend = chats.get_backend()
        chat_id = await chats.create_chat("Be brief.")  # trim, the default
        assert (await chats.get_chat(chat_id)).context_policy is ContextPolicy.TRIM
        answers = [await chats.send(chat_id, question(n)) for n in range(10)]
    seen = answer_requests(fake_llm)
    for answer, request in zip(answers, seen, strict=True):
        assert answer.context_messages == len(request.messages)
        assert answer.context_tokens == sum(
            backend.count_tokens(m["role"], m["content"], "fake-model") for m in request.messages)
    assert answers[0].context_messages == 2  # the system prompt and the question
    assert answers[-1].context_messages < 2 * 10  # trimmed, and the count says so
    assert max(a.context_tokens or 0 for a in answers) <= 600 - 100


async def test_none_refuses_a_chat_too_long_for_the_window_and_stores_nothing(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    async with AsyncChatSessions(**{**settings_kwargs, **SMALL}) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat("Be brief.", context_policy=ContextPolicy.NONE)
        sent = 0
        refused: ContextTooLong | None = None
        while refused is None:
            try:
                answer = await chats.send(chat_id, question(sent))
            except ContextTooLong as exc:
                refused = exc
            else:
                assert answer.context_messages == 2 * sent + 2  # everything, every time
                sent += 1
        assert refused.type == "context_too_long"
        assert "context policy is 'none'" in str(refused)
        assert sent >= 3
        chat = await chats.get_chat(chat_id)
        assert chat.message_count == 2 * sent
        assert len(fake_llm.requests) == sent
        assert [m.status for m in await chats.history(chat_id, include_failed=True)][1:] == [
            TurnStatus.OK] * (2 * sent)
        # the chat stays usable: another policy lets the same message through
        updated = await chats.update_chat(chat_id, context_policy="trim")
        assert updated.context_policy is ContextPolicy.TRIM
        await chats.send_message(chat_id, question(sent))
        with pytest.raises(InvalidInput, match="context_policy must be one of"):
            await chats.update_chat(chat_id, context_policy="everything")


async def test_a_failed_summary_fails_the_turn_and_keeps_the_message(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    async with AsyncChatSessions(**{**settings_kwargs, **SMALL}) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat("Be brief.", context_policy="summarize")
        n = 0
        while not any(is_summary_request(r) for r in fake_llm.requests):
            before = len(fake_llm.requests)
            fake_llm.inject(Fault.status(500))
            with contextlib.suppress(BackendError):  # a summary's request, or the answer's
                await chats.send_message(chat_id, question(n))
            failed = fake_llm.requests[before]
            if not is_summary_request(failed):  # an ordinary turn: run it for real
                await chats.retry(chat_id)
            n += 1
        rows = (await chats.history(chat_id, include_failed=True))[1:]
        assert (rows[-1].role, rows[-1].status) == (Role.USER, TurnStatus.FAILED)
        assert rows[-1].content == question(n - 1)
        assert not any(m.role is Role.SYSTEM for m in rows)  # no summary stored
        answer = await chats.retry(chat_id)  # now the summary is written, then the answer
        rows = (await chats.history(chat_id, include_failed=True))[1:]
        assert [m.role for m in rows[-3:]] == [Role.USER, Role.SYSTEM, Role.ASSISTANT]
        assert rows[-1] == answer
        assert summaries.shown(rows[-2]) in answer_requests(fake_llm)[-1].messages


async def test_a_repeated_request_gets_the_answer_stored_after_its_summary(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    async with AsyncChatSessions(**{**settings_kwargs, **SMALL}) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat("Be brief.", context_policy="summarize")
        n = 0
        while not any(is_summary_request(r) for r in fake_llm.requests):
            first = await chats.send(chat_id, question(n), idempotency_key=f"k{n}")
            n += 1
        again = await chats.send(chat_id, question(n - 1), idempotency_key=f"k{n - 1}")
        assert again == first
        assert len(fake_llm.requests) == n + 1  # the answers and one summary, nothing more


async def test_the_memory_store_keeps_summaries_too(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    kwargs = {**settings_kwargs, **SMALL, "database_url": "memory://"}
    async with AsyncChatSessions(**kwargs) as chats:  # type: ignore[arg-type]
        chat_id = await chats.create_chat("Be brief.", context_policy="summarize")
        for n in range(8):
            await chats.send_message(chat_id, question(n))
        rows = await chats.history(chat_id)
    written = [m for m in rows[1:] if m.role is Role.SYSTEM]
    assert written
    assert written[0].covers_seq is not None
    assert summaries.shown(written[-1]) == answer_requests(fake_llm)[-1].messages[1]
    assert question(0) not in text_of(answer_requests(fake_llm)[-1])


# HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def small_http(settings_kwargs: dict[str, object]) -> Iterator[httpx.Client]:
    """The live service with a small context window."""
    from chatsessions.config import Settings
    from chatsessions.service import create_app

    settings = Settings(**{**settings_kwargs, **SMALL})  # type: ignore[arg-type]
    server = LiveServer(create_app(settings)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


def test_http_policies_refusal_summaries_and_what_each_answer_saw(
    small_http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    created = small_http.post("/chats", json={"system_prompt": "Be brief.",
                                              "context_policy": "none"})
    assert created.status_code == 201, created.text
    chat = created.json()
    assert chat["context_policy"] == "none"
    url = f"/chats/{chat['id']}/messages"
    for n in range(20):
        sent = small_http.post(url, json={"content": question(n)})
        if sent.status_code != 200:
            break
        answer = sent.json()
        assert (answer["context_messages"], answer["context_tokens"] > 0) == (2 * n + 2, True)
        assert answer["covers_seq"] is None
    assert sent.status_code == 422
    error = sent.json()["error"]
    assert error["type"] == "context_too_long"
    assert "context policy is 'none', so nothing is left out" in error["message"]
    assert "tokens but only" in error["message"]
    stored = small_http.get(url).json()["data"]
    assert len(stored) == 2 * n  # the refused message was not stored
    assert small_http.get(f"/chats/{chat['id']}").json()["message_count"] == 2 * n

    for bad in ("everything", None, 3):
        refused = small_http.patch(f"/chats/{chat['id']}", json={"context_policy": bad})
        assert refused.status_code == 422, bad
        assert "context_policy" in refused.json()["error"]["message"]
    patched = small_http.patch(f"/chats/{chat['id']}", json={"context_policy": "summarize"})
    assert patched.json()["context_policy"] == "summarize"
    answered = small_http.post(url, json={"content": question(n)})
    assert answered.status_code == 200, answered.text
    rows = small_http.get(url).json()["data"]
    summary = next(m for m in rows if m["role"] == "system")
    assert summary["status"] == "ok"
    assert 0 < summary["covers_seq"] < summary["seq"]
    assert summary["usage"]["total_tokens"] > 0  # what the summary cost is on record
    assert (rows[-1]["role"], rows[-1]["seq"]) == ("assistant", summary["seq"] + 1)
    seen = answer_requests(fake_llm)[-1].messages
    assert seen[1] == {"role": "system", "content": summaries.SHOWN_AS + summary["content"]}
    assert answered.json()["context_messages"] == len(seen)
    assert question(0) not in "\n".join(m["content"] for m in seen)

    trimmed = small_http.post("/chats", json={}).json()
    assert trimmed["context_policy"] == "trim"
    unknown = small_http.post("/chats", json={"context_policy": "all"})
    assert unknown.status_code == 422
    assert "context_policy" in unknown.json()["error"]["message"]


def test_store_false_shows_the_model_what_the_next_turn_would(
    small_http: httpx.Client, fake_llm: FakeLLMServer
) -> None:
    """/v1/responses with ``store: false`` on a ``summarize`` chat: the model gets exactly
    the requests the stored turn with the same input then gets (the summary the policy
    needs included, written and not kept), and the chat is left as it was."""
    chat = small_http.post("/chats", json={"system_prompt": "Be brief.",
                                           "context_policy": "summarize"}).json()
    url = f"/chats/{chat['id']}/messages"
    compared_with_summary = 0
    for n in range(14):
        count = small_http.get(f"/chats/{chat['id']}").json()["message_count"]
        before = len(fake_llm.requests)
        loose = small_http.post("/v1/responses", json={
            "model": "fake-model", "input": question(n), "conversation": chat["id"],
            "store": False})
        assert loose.status_code == 200, loose.text
        unstored = [r.messages for r in fake_llm.requests[before:]]
        assert small_http.get(f"/chats/{chat['id']}").json()["message_count"] == count

        before = len(fake_llm.requests)
        sent = small_http.post(url, json={"content": question(n)})
        assert sent.status_code == 200, sent.text
        stored = [r.messages for r in fake_llm.requests[before:]]
        assert unstored == stored, f"turn {n}"
        assert loose.json()["output"][0]["content"][0]["text"] == sent.json()["content"]
        compared_with_summary += len(stored) == 2
    assert compared_with_summary >= 2, "some turns needed a new summary"
    rows = small_http.get(url).json()["data"]
    assert [m["role"] for m in rows].count("system") == compared_with_summary  # only the turns'


# the command line ---------------------------------------------------------------------------


def test_cli_new_takes_a_context_policy(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    env = {**cli_env(tmp_path, fake_llm), "CHATSESSIONS_CONTEXT_WINDOW": "600",
           "CHATSESSIONS_MAX_OUTPUT_TOKENS": "100"}
    created = run(env, "new", "--context-policy", "none")
    assert created.returncode == 0, created.stderr
    chat_id = created.stdout.strip()

    async def policy() -> ContextPolicy:
        store = open_store(env["CHATSESSIONS_DATABASE_URL"])
        await store.open()
        try:
            chat = await store.get_chat(chat_id, "default")
            assert chat is not None
            return chat.context_policy
        finally:
            await store.close()

    assert asyncio.run(policy()) is ContextPolicy.NONE
    refused = run(env, "send", chat_id, "word " * 400)
    assert refused.returncode == 4
    assert "context policy is 'none'" in refused.stderr
    bad = run(env, "new", "--context-policy", "all")
    assert bad.returncode == 2
    assert "'trim', 'summarize', 'none'" in bad.stderr
    assert run(env, "new").returncode == 0


async def test_retry_after_a_summary_and_a_broken_stream(
    settings_kwargs: dict[str, object], fake_llm: FakeLLMServer
) -> None:
    async with AsyncChatSessions(**{**settings_kwargs, **SMALL}) as chats:  # type: ignore[arg-type]
        # a first chat finds the turn that writes the first summary...
        scout = await chats.create_chat("Be brief.", context_policy="summarize")
        n = 0
        while not any(is_summary_request(r) for r in fake_llm.requests):
            await chats.send_message(scout, question(n))
            n += 1
        # ...an identical chat gets there with its answer's stream cut after the summary
        chat_id = await chats.create_chat("Be brief.", context_policy="summarize")
        for k in range(n - 1):
            await chats.send_message(chat_id, question(k))
        fake_llm.inject(Fault.timeout(0))  # the summary request: answered normally
        fake_llm.inject(Fault.cut_stream(2))
        with pytest.raises(BackendError):
            async for _ in chats.stream_message(chat_id, question(n - 1)):
                pass
        rows = (await chats.history(chat_id, include_failed=True))[1:]
        assert [(m.role, m.status) for m in rows[-3:]] == [
            (Role.USER, TurnStatus.FAILED), (Role.SYSTEM, TurnStatus.OK),
            (Role.ASSISTANT, TurnStatus.FAILED)]
        answer = await chats.retry(chat_id)  # the summary stays; no second one is written
        seen = answer_requests(fake_llm)[-1].messages
        assert seen[1] == summaries.shown(rows[-2])
        assert answer.context_messages == len(seen)
        assert sum(is_summary_request(r) for r in fake_llm.requests) == 2


def test_cli_policy_shows_and_changes_a_chats_policy(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    """A chat refused under none takes the same turn once switched to summarize."""
    env = {**cli_env(tmp_path, fake_llm), "CHATSESSIONS_CONTEXT_WINDOW": "600",
           "CHATSESSIONS_MAX_OUTPUT_TOKENS": "100"}
    chat_id = run(env, "new", "--context-policy", "none").stdout.strip()
    assert run(env, "policy", chat_id).stdout.strip() == "none"

    async def fill() -> int:
        """Turns until the chat no longer fits; the number of the refused one."""
        async with AsyncChatSessions(
            database_url=env["CHATSESSIONS_DATABASE_URL"], backend="openai",
            model="fake-model", openai_base_url=fake_llm.base_url, openai_api_key="test",
            auto_title=False, **SMALL,  # type: ignore[arg-type]
        ) as chats:
            for n in range(30):
                try:
                    await chats.send(chat_id, question(n))
                except ContextTooLong:
                    return n
        raise AssertionError("the chat never outgrew its window")

    refused = asyncio.run(fill())
    changed = run(env, "policy", chat_id, "summarize")
    assert (changed.returncode, changed.stdout) == (0, ""), changed.stderr
    assert run(env, "policy", chat_id).stdout.strip() == "summarize"
    sent = run(env, "send", chat_id, question(refused))
    assert sent.returncode == 0, sent.stderr
    assert any(is_summary_request(r) for r in fake_llm.requests)

    bad = run(env, "policy", chat_id, "all")
    assert bad.returncode == 2
    assert "'trim', 'summarize', 'none'" in bad.stderr
    assert run(env, "policy", "no-such-chat").returncode == 3
    assert run(env, "policy", chat_id).stdout.strip() == "summarize"
