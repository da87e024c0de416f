"""Invariant: the model is never shown a tool call without its output, nor an output
without its call, whatever the history (well-formed or left uneven by deletes and
imports) and whatever the window: a property test over random histories and windows,
on the context planning itself (``engine/context.py``)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatsessions.engine.cache import History
from chatsessions.engine.context import plan_context
from chatsessions.engine.tools import check_pairing
from chatsessions.errors import ContextTooLong
from chatsessions.types import Chat, ContextPolicy, GenerationParams, Message, Role, ToolCall


class WordBackend:
    """Counts a token per word (plus 3 per message), with a window of the test's choice."""

    name = "words"
    default_model = "m"

    def __init__(self, window: int) -> None:
        self.window = window

    def count_tokens(self, role: str, content: str, model: str) -> int:
        return len(content.split()) + 3

    def context_window(self, model: str) -> int:
        return self.window


@st.composite
def histories(draw: st.DrawFn) -> list[Message]:
    """Turns of user, answers that may call tools, their outputs, with random damage:
    outputs left out or repeated, calls whose outputs never came."""
    rows: list[Message] = []
    seq = 0

    def add(role: Role, content: str, **fields: Any) -> None:
        nonlocal seq
        seq += 1
        rows.append(Message("c", seq, role, content, **fields))

    for turn in range(draw(st.integers(0, 8))):
        add(Role.USER, "question " * draw(st.integers(1, 30)))
        for round_ in range(draw(st.integers(0, 3))):
            calls = tuple(ToolCall(f"call_{turn}_{round_}_{n}", "lookup", '{"n": 1}')
                          for n in range(draw(st.integers(1, 3))))
            add(Role.ASSISTANT, draw(st.sampled_from(["", "let me look"])), tool_calls=calls)
            for call in calls:
                damage = draw(st.sampled_from(["none", "none", "none", "lost", "twice"]))
                if damage != "lost":
                    add(Role.TOOL, "output " * draw(st.integers(1, 40)),
                        tool_call_id=call.id)
                if damage == "twice":
                    add(Role.TOOL, "again", tool_call_id=call.id)
        if draw(st.booleans()):
            add(Role.ASSISTANT, "answer " * draw(st.integers(1, 30)))
        if draw(st.integers(0, 9)) == 0:
            add(Role.TOOL, "stray output", tool_call_id="call_nowhere")
    return rows


def _is_well_formed(shown: list[dict[str, Any]]) -> bool:
    try:
        check_pairing(shown)
    except Exception:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(rows=histories(), window=st.integers(60, 2000),
       policy=st.sampled_from([ContextPolicy.TRIM, ContextPolicy.NONE]),
       ends_with_outputs=st.booleans())
def test_calls_and_outputs_are_shown_together_or_not_at_all(
    rows: list[Message], window: int, policy: ContextPolicy, ends_with_outputs: bool
) -> None:
    history = History()
    history.add(rows)
    chat = Chat(id="c", system_prompt="be brief", context_policy=policy, model="m")
    backend = WordBackend(window)
    outputs: list[Message] = []
    text: str | None = "new question"
    if ends_with_outputs:  # a tool round: the answer's calls, then their outputs
        call = ToolCall("call_new", "lookup", "{}")
        history.add([Message("c", len(rows) + 1, Role.USER, "ask"),
                     Message("c", len(rows) + 2, Role.ASSISTANT, "", tool_calls=(call,))])
        outputs = [Message("c", 0, Role.TOOL, "found it", tool_call_id=call.id)]
        text = None
    try:
        context = plan_context(chat, history, text, backend, GenerationParams(max_tokens=20),
                               max_output_tokens=20, outputs=outputs)
    except ContextTooLong:
        return
    shown = context.messages
    assert _is_well_formed(shown), shown
    if ends_with_outputs:  # the round in progress is shown whole
        assert shown[-1]["tool_call_id"] == "call_new"
        assert shown[-2]["tool_calls"][0]["id"] == "call_new"
    else:
        assert shown[-1] == {"role": "user", "content": "new question"}
    assert sum(backend.count_tokens(m["role"], m["content"] or "", "m") for m in shown) \
        <= window  # calls add a few tokens each; the reserve of 20 covers them here


def test_a_well_formed_history_loses_nothing() -> None:
    call = ToolCall("call_1", "lookup", "{}")
    rows = [Message("c", 1, Role.USER, "where?"),
            Message("c", 2, Role.ASSISTANT, "", tool_calls=(call,)),
            Message("c", 3, Role.TOOL, "here", tool_call_id="call_1"),
            Message("c", 4, Role.ASSISTANT, "it is here")]
    history = History()
    history.add(rows)
    chat = Chat(id="c", system_prompt="S", model="m")
    context = plan_context(chat, history, "thanks", WordBackend(10_000),
                           GenerationParams(), max_output_tokens=20)
    assert context.messages[1:] == [*(m.as_openai() for m in rows),
                                    {"role": "user", "content": "thanks"}]
