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
from chatsessions.errors import ContextTooLong
from chatsessions.types import Chat, ContextPolicy, GenerationParams, Message, Role, ToolCall

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
             {"type": "text", "text": "cd"},
             {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    assert shown_tokens(backend, {"role": "user", "content": parts}, "small") == (
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


def test_a_summary_takes_in_the_beginning_of_a_message_longer_than_its_request() -> None:
    """The turns a new summary must take in, newest first, as many as one summary request
    has room for; a message longer than that room is taken from its beginning."""
    chat = Chat(id="c", system_prompt=SYSTEM, model="medium",
                context_policy=ContextPolicy.SUMMARIZE)
    long = "y" * 700
    rows = [Message("c", 1, Role.USER, "q1"), Message("c", 2, Role.ASSISTANT, long),
            Message("c", 3, Role.USER, "q2"), Message("c", 4, Role.ASSISTANT, "z" * 300)]
    context = plan_context(chat, history_of(*rows), "q3", CharBackend(),
                           GenerationParams(max_tokens=RESERVE), max_output_tokens=10_000)
    refresh = context.refresh
    assert refresh is not None
    assert refresh.previous is None
    assert refresh.covers_seq == 2
    assert refresh.max_tokens == summary.token_limit(budget("medium"))
    [taken] = refresh.turns
    assert taken.seq == 2
    assert taken.content.endswith(" …")
    assert long.startswith(taken.content.removesuffix(" …"))
    fixed = sum(len(m["content"]) + OVERHEAD[m["role"]] for m in summary.request(None, []))
    room = WINDOWS["medium"] - refresh.max_tokens - 3 - fixed
    assert room - 20 < len(taken.content) + OVERHEAD["assistant"] <= room
    # what is shown: the turns after the ones to summarize (the summary goes before them)
    assert [m["content"] for m in context.messages] == [SYSTEM, "q2", "z" * 300, "q3"]


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
                             GenerationParams(max_tokens=RESERVE), max_output_tokens=10_000)
    assert messages[:2] == [{"role": "system", "content": SYSTEM}, shown_summary]
    assert [m["content"] for m in messages[2:-1]] == [m.content for m in turns[2:]]
    assert len(build_context(chat, history, text(Role.USER, room - 60), CharBackend(),
                             GenerationParams(max_tokens=RESERVE),
                             max_output_tokens=10_000)) == 2 + 4 + 1
