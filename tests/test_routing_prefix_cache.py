"""The fake model's simulated prefix cache, which the routing benchmark stands on: a chat
that comes back to the same server pays only for its new tokens."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from chatsessions.testing import FakeLLMServer

SYSTEM = {"role": "system", "content": "You help."}


def ask(client: openai.OpenAI, messages: list[dict[str, Any]]) -> tuple[int, int]:
    """Prompt tokens and cached prompt tokens of one call."""
    response = client.chat.completions.create(model="fake-model", messages=messages)  # type: ignore[arg-type]
    usage = response.usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    return usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens or 0


@pytest.fixture
def fake() -> Any:
    with FakeLLMServer(prefix_cache=0.00005, prefix_cache_size=2) as server:
        yield server


def test_a_returning_chat_pays_only_for_what_it_adds(fake: FakeLLMServer) -> None:
    client = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
    first = [SYSTEM, {"role": "user", "content": "one two three"}]
    assert ask(client, first)[1] == 0
    second = [*first, {"role": "assistant", "content": "four"},
              {"role": "user", "content": "five six"}]
    # <system> You help. <user> one two three: 7 tokens seen before
    assert ask(client, second)[1] == 7
    assert fake.requests[-1].cached_tokens == 7
    other = [SYSTEM, {"role": "user", "content": "another chat"}]
    assert ask(client, other)[1] == 0  # a conversation of its own
    changed = [SYSTEM, {"role": "user", "content": "one two three"},
               {"role": "assistant", "content": "edited"}]
    assert ask(client, changed)[1] == 8  # up to where it differs: "<assistant>" matched


def test_the_oldest_conversation_is_forgotten_first(fake: FakeLLMServer) -> None:
    client = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
    chats = [[SYSTEM, {"role": "user", "content": f"chat {n}"}] for n in range(3)]
    for chat in chats:
        ask(client, chat)
    assert ask(client, chats[2])[1] > 0
    assert ask(client, chats[0])[1] == 0  # dropped when the third came (size 2)
    fake.reset()
    assert ask(client, chats[2])[1] == 0


def test_unseen_tokens_delay_the_answer(fake: FakeLLMServer) -> None:
    client = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
    fake.prefix_cache = 0.2  # seconds per token: this cold prompt of 12 tokens takes 2.4 s
    long = [SYSTEM, {"role": "user", "content": "a b c d e f g h"}]
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(
            model="fake-model", messages=long)  # type: ignore[arg-type]
    fake.prefix_cache = 0.00005  # (it waits its turn behind the slow one: one prefill at a time)
    assert ask(client, long)[1] == 12  # <system> You help. <user> a b c d e f g h


def test_the_cache_needs_sensible_settings() -> None:
    with pytest.raises(ValueError, match="prefix_cache >= 0"):
        FakeLLMServer(prefix_cache=-1)
    with pytest.raises(ValueError, match="prefix_cache_size >= 1"):
        FakeLLMServer(prefix_cache_size=0)
