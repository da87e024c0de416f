"""What fits the model's window, in numbers: the budget a turn fills, what one message
takes (its text, its images, its calls), a tool round kept or refused whole, and what a
summary request may take in. Pure: the backend counts a token per character plus a
template overhead per role, and knows only its own models, so a count asked with the
wrong role or for the wrong model shows."""

from __future__ import annotations

from typing import Any

import pytest

from chatsessions.engine import summary
from chatsessions.engine.cache import History
from chatsessions.engine.context import IMAGE_TOKENS, build_context, plan_context, shown_tokens
from chatsessions.errors import BackendError, ContextTooLong
from chatsessions.types import (
    Chat,
    ContentPart,
    ContextPolicy,
    GenerationParams,
    ImagePart,
    Message,
    Role,
    TextPart,
    ToolCall,
)

OVERHEAD = {"system": 4, "user": 3, "assistant": 2, "tool": 5}
WINDOWS = {"small": 200, "medium": 1000}
#: the answer reserved by the tests' params (max_output_tokens is set far larger)
RESERVE = 50
SYSTEM = "sys"  # 3 + 4 = 7 tokens


class CharBackend:
    name = "chars"
    default_model = "small"

    def count_tokens(self, role: str, content: str, model: str) -> int:
        if model not in WINDOWS:
            raise LookupError(f"no model {model!r}")
        return len(content) + OVERHEAD[role]

    def context_window(self, model: str) -> int:
        return WINDOWS[model]


def budget(model: str, system: str = SYSTEM) -> int:
    """Window less the reserved answer, the system prompt and the answer's primer (3)."""
    return WINDOWS[model] - RESERVE - (len(system) + OVERHEAD["system"]) - 3


def text(role: Role, tokens: int) -> str:
    """Content that takes ``tokens`` as a message of ``role``."""
    return "x" * (tokens - OVERHEAD[role.value])


def history_of(*rows: Message) -> History:
    history = History()
    history.add(list(rows))
    return history


def plan(chat: Chat, history: History, new: str | None, **kwargs: Any) -> list[dict[str, Any]]:
    return plan_context(chat, history, new, CharBackend(), GenerationParams(max_tokens=RESERVE),
                        max_output_tokens=10_000, **kwargs).messages


def two_turns() -> list[Message]:
    return [Message("c", seq, role, text(role, 30))
            for seq, role in enumerate([Role.USER, Role.ASSISTANT] * 2, start=1)]


def test_a_message_takes_its_text_each_image_and_each_call() -> None:
    backend = CharBackend()
    assert shown_tokens(backend, {"role": "user", "content": "hello"}, "small") == 5 + 3
    parts = [{"type": "text", "text": "ab"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
             {"type": "text", "text": "cd"}]
    assert shown_tokens(backend, {"role": "user", "content": parts}, "small") == (
        len("ab\ncd") + 3 + IMAGE_TOKENS)
    two = [*parts, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    assert shown_tokens(backend, {"role": "user", "content": two}, "small") == (
        len("ab\ncd") + 3 + 2 * IMAGE_TOKENS)
    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "lookup", "arguments": '{"q": 1}'}},
             {"id": "call_2", "type": "function",
              "function": {"name": "add", "arguments": "{}"}}]
    assert shown_tokens(backend, {"role": "assistant", "content": None, "tool_calls": calls},
                        "small") == 2 + (len('lookup{"q": 1}') + 5) + (len("add{}") + 5)


def test_the_turns_shown_fill_the_models_window_less_the_reserve_and_the_system_prompt(
) -> None:
    """Exactly the budget fits; one token more drops the oldest whole turn."""
    chat = Chat(id="c", system_prompt=SYSTEM, model="small")
    rows = two_turns()  # 120 tokens
    room = budget("small") - 120
    everything = plan(chat, history_of(*rows), text(Role.USER, room))
    assert [m["content"] for m in everything[1:-1]] == [m.content for m in rows]
    assert everything[0] == {"role": "system", "content": SYSTEM}
    trimmed = plan(chat, history_of(*rows), text(Role.USER, room + 1))
    assert [m["content"] for m in trimmed[1:-1]] == [m.content for m in rows[2:]]
    # the other model's window is its own
    wide = Chat(id="c", system_prompt=SYSTEM, model="medium")
    assert len(plan(wide, history_of(*rows), text(Role.USER, room + 1))) == 6


def test_a_window_the_system_prompt_and_reserve_fill_refuses_every_message() -> None:
    history = history_of()
    full = "s" * (WINDOWS["small"] - RESERVE - OVERHEAD["system"] - 3)
    with pytest.raises(ContextTooLong, match="already fill the context window"):
        plan(Chat(id="c", system_prompt=full, model="small"), history, "hi")
    # one token left: the message is what does not fit
    with pytest.raises(ContextTooLong, match="takes 5 tokens but only 1 fit"):
        plan(Chat(id="c", system_prompt=full[1:], model="small"), history, "hi")


def test_a_tool_round_is_shown_whole_or_refused_whole() -> None:
    """A tool round (the question, the answer's calls, their outputs) counts as one: the
    older turns make room for it, and if it alone does not fit, the turn is refused."""
    chat = Chat(id="c", system_prompt=SYSTEM, model="small")
    calls = (ToolCall("call_1", "f", "{}"), ToolCall("call_2", "g", "{}"))
    asked = Message("c", 4, Role.ASSISTANT, "", tool_calls=calls)  # 2 + 2 * (3 + 5) = 18

    def outputs(tokens: int) -> list[Message]:
        return [Message("c", 0, Role.TOOL, text(Role.TOOL, tokens), tool_call_id=call.id)
                for call in calls]

    rows = [*two_turns()[:2], Message("c", 3, Role.USER, text(Role.USER, 30)), asked]
    shown = plan(chat, history_of(*rows), None, outputs=outputs(40))  # 30 + 18 + 80
    assert [m["role"] for m in shown] == ["system", "user", "assistant", "tool", "tool"]
    assert shown[1]["content"] == rows[2].content
    # one round alone, too big as a whole though its calls and outputs would fit
    alone = [Message("c", 1, Role.USER, text(Role.USER, 61)),
             Message("c", 2, Role.ASSISTANT, "", tool_calls=calls)]
    round_tokens = 61 + 18 + 2 * 31
    assert round_tokens == budget("small") + 1
    with pytest.raises(ContextTooLong, match=f"takes {round_tokens} tokens"):
        plan(chat, history_of(*alone), None, outputs=outputs(31))


@pytest.mark.parametrize("earlier", [False, True])
def test_a_summary_takes_in_the_beginning_of_a_message_longer_than_its_request(
    earlier: bool,
) -> None:
    """The turns a new summary must take in, newest first, as many as one summary request
    (with the previous summary, if any) has room for; a message longer than that room is
    taken from its beginning."""
    chat = Chat(id="c", system_prompt=SYSTEM, model="medium",
                context_policy=ContextPolicy.SUMMARIZE)
    long = "y" * 700
    previous = Message("c", 2, Role.SYSTEM, "p" * 100, covers_seq=1)
    rows = [Message("c", 1, Role.USER, "q0"), *([previous] if earlier else []),
            Message("c", 3, Role.USER, "q1"), Message("c", 4, Role.ASSISTANT, long),
            Message("c", 5, Role.USER, "q2"), Message("c", 6, Role.ASSISTANT, "z" * 300)]
    context = plan_context(chat, history_of(*rows), "q3", CharBackend(),
                           GenerationParams(max_tokens=RESERVE), max_output_tokens=10_000)
    refresh = context.refresh
    assert refresh is not None
    assert refresh.previous == (previous if earlier else None)
    assert refresh.covers_seq == 4
    assert refresh.max_tokens == summary.token_limit(budget("medium"))
    [taken] = refresh.turns
    assert taken.seq == 4
    assert taken.content.endswith(" …")
    assert long.startswith(taken.content.removesuffix(" …"))
    fixed = sum(len(m["content"]) + OVERHEAD[m["role"]]
                for m in summary.request(refresh.previous, []))
    room = WINDOWS["medium"] - refresh.max_tokens - 3 - fixed
    assert room - 20 < len(taken.content) + OVERHEAD["assistant"] <= room
    # what is shown: the turns after the ones to summarize (the summary goes before them)
    shown = [m["content"] for m in context.messages]
    assert shown == [SYSTEM, *([summary.shown(previous)["content"]] if earlier else []),
                     "q2", "z" * 300, "q3"]


def test_a_window_too_small_for_a_summary_request_is_refused() -> None:
    chat = Chat(id="c", system_prompt=SYSTEM, model="small",
                context_policy=ContextPolicy.SUMMARIZE)
    with pytest.raises(ContextTooLong, match="too small to write a summary in"):
        plan(chat, history_of(*two_turns()), text(Role.USER, 30))


def test_without_a_new_summary_the_latest_is_shown_and_the_rest_trimmed_to_fit() -> None:
    """A regenerated answer's context (``build_context``) writes no summary: it shows the
    latest one and the newest turns after it that fit next to it."""
    chat = Chat(id="c", system_prompt=SYSTEM, model="medium",
                context_policy=ContextPolicy.SUMMARIZE)
    written = Message("c", 5, Role.SYSTEM, "s" * 20, covers_seq=2)
    shown_summary = summary.shown(written)
    summary_tokens = len(shown_summary["content"]) + OVERHEAD["system"]
    turns = [Message("c", seq, role, text(role, 30))
             for seq, role in [(3, Role.USER), (4, Role.ASSISTANT),
                               (6, Role.USER), (7, Role.ASSISTANT)]]
    history = history_of(*two_turns()[:2], turns[0], turns[1], written, *turns[2:])
    room = budget("medium") - summary_tokens - 60
    messages = build_context(chat, history, text(Role.USER, room), CharBackend(),
                             GenerationParams(), max_output_tokens=RESERVE)
    assert messages[:2] == [{"role": "system", "content": SYSTEM}, shown_summary]
    assert [m["content"] for m in messages[2:-1]] == [m.content for m in turns[2:]]
    assert len(build_context(chat, history, text(Role.USER, room - 60), CharBackend(),
                             GenerationParams(max_tokens=RESERVE),
                             max_output_tokens=10_000)) == 2 + 4 + 1


def hundreds(turns: int) -> list[Message]:
    """``turns`` whole turns of 100 tokens a message."""
    return [Message("c", seq, role, text(role, 100))
            for seq, role in enumerate([Role.USER, Role.ASSISTANT] * turns, start=1)]


def summarizing(new_tokens: int) -> Any:
    chat = Chat(id="c", system_prompt=SYSTEM, model="medium",
                context_policy=ContextPolicy.SUMMARIZE)
    return plan_context(chat, history_of(*hundreds(5)), text(Role.USER, new_tokens),
                        CharBackend(), GenerationParams(max_tokens=RESERVE),
                        max_output_tokens=10_000)


def test_after_a_summary_the_turns_kept_fill_at_most_half_the_room_it_leaves() -> None:
    """So the next turns grow into the other half before another summary is due; a new
    message too big for half the room takes the room whole."""
    reserve = len(summary.SHOWN_AS) + OVERHEAD["system"] + summary.token_limit(
        budget("medium"))
    room = budget("medium") - reserve
    context = summarizing(10)  # 5 turns of 200 and the new 10 outgrow the budget
    assert sum(context.counts) <= room // 2 < sum(context.counts) + 200
    assert [m.seq for m in context.turns] == [9, 10, 0]
    assert context.refresh is not None
    assert context.refresh.covers_seq == 8
    bigger = summarizing(room // 3 + 1)
    assert [m.seq for m in bigger.turns] == [0]  # with a turn it would pass half the room
    assert bigger.refresh is not None
    assert bigger.refresh.covers_seq == 10


def test_a_summary_longer_than_its_reserve_leaves_more_turns_out_or_fails_the_turn() -> None:
    """The summary the model wrote takes its place in the context: if it took more than
    it was given, older turns make room for it; if even the message does not fit next
    to it, the turn fails (the model may write a shorter one on the retry)."""
    backend = CharBackend()

    def written(tokens: int) -> Message:
        return Message("c", 11, Role.SYSTEM, "s" * (tokens - summary_overhead), covers_seq=8)

    summary_overhead = len(summary.SHOWN_AS) + OVERHEAD["system"]
    short = summarizing(10).summarized(written(100), backend, "medium")
    assert [m.seq for m in short.turns] == [9, 10, 0]
    assert short.summary == summary.shown(written(100))
    assert short.summary_tokens == 100
    assert short.refresh is None
    assert short.tokens == 7 + 100 + 210
    long = summarizing(10).summarized(written(budget("medium") - 100), backend, "medium")
    assert [m.seq for m in long.turns] == [0]
    with pytest.raises(BackendError, match="left no room for the message"):
        summarizing(10).summarized(written(budget("medium") - 5), backend, "medium")


def test_trim_shows_the_turns_a_summary_covers_and_never_the_summary() -> None:
    """A chat switched from ``summarize`` back to ``trim``: the summary rows stay stored
    but the turns they stand for are shown again, as far as they fit."""
    chat = Chat(id="c", system_prompt=SYSTEM, model="medium")
    rows = [*two_turns()[:2], Message("c", 3, Role.SYSTEM, "the gist", covers_seq=2),
            Message("c", 4, Role.USER, "more")]
    shown = plan(chat, history_of(*rows), "and?")
    assert [m["content"] for m in shown] == [SYSTEM, rows[0].content, rows[1].content,
                                             "more", "and?"]


def test_policy_none_refuses_a_history_that_outgrows_the_window() -> None:
    chat = Chat(id="c", system_prompt=SYSTEM, model="small", context_policy=ContextPolicy.NONE)
    rows = two_turns()  # 120 tokens
    assert len(plan(chat, history_of(*rows), text(Role.USER, budget("small") - 120))) == 6
    with pytest.raises(ContextTooLong, match="policy is 'none'"):
        plan(chat, history_of(*rows), text(Role.USER, budget("small") - 119))


def test_the_new_message_is_shown_and_counted_with_its_images() -> None:
    chat = Chat(id="c", system_prompt=SYSTEM, model="medium")
    parts: tuple[ContentPart, ...] = (TextPart("what is this?"),
                                      ImagePart("data:image/png;base64,AA=="))
    context = plan_context(chat, history_of(), "what is this?", CharBackend(),
                           GenerationParams(max_tokens=RESERVE), max_output_tokens=10_000,
                           parts=parts)
    assert context.views[-1] == Message("c", 0, Role.USER, "what is this?",
                                        parts=parts).as_openai()
    assert isinstance(context.views[-1]["content"], list)
    assert context.counts == [len("what is this?") + 3 + IMAGE_TOKENS]


def test_an_answer_left_with_neither_text_nor_answered_calls_is_not_shown() -> None:
    """An answer whose calls all lost their outputs (deleted, or an import) is left out
    if it has no text; with text, it is shown as text alone."""
    chat = Chat(id="c", system_prompt=SYSTEM, model="medium")
    call = (ToolCall("call_1", "f", "{}"),)
    for content, shown in (("", []), ("let me look", [{"role": "assistant",
                                                        "content": "let me look"}])):
        rows = [Message("c", 1, Role.USER, "q"),
                Message("c", 2, Role.ASSISTANT, content, tool_calls=call),
                Message("c", 3, Role.ASSISTANT, "done")]
        messages = plan(chat, history_of(*rows), "next")
        assert messages[2:-2] == shown
        assert [m["content"] for m in (messages[1], *messages[-2:])] == ["q", "done", "next"]
