"""Target 6: the embedded model with interleaved chats, per-chat KV state on and off.

``AsyncChatSessions(backend="local")`` (SmolLM2-135M through llama.cpp) on a SQLite file,
twice: with the per-chat state cache (the default) and with ``local_chat_states=0``.
Every chat speaks in turn (turn k of every chat before anyone's turn k+1), so without
saved states each turn finds another chat's tokens in the llama.cpp context and evaluates
its whole history again. Each turn is streamed; time to first token is the time from
calling ``stream`` to the first text delta, so it includes storing the user's message and
building the context, as a user would see it. The two sides take turns in lockstep (one
turn each, the first to go rotating); answers are greedy (temperature 0) and short.

Each chat's messages open with a greeting of its own (another in each pass: a chat
held from the previous pass would otherwise hold a new chat's first message word for
word). With the other benchmarks' texts
alone, which differ between chats only from the order number on, a chat's first turn
would find most of its message already in the context (left there by the previous chat's
near-identical turn) and evaluate only a dozen tokens: a cheaper first turn than any real
customer gets. Two counters are read on the model itself, per turn: the prompt tokens
llama.cpp evaluated before the first token, and the time spent switching chat states.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import SYSTEM_PROMPT, Ratio, median, user_text
from bench.workload import micro
from chatsessions import AsyncChatSessions
from chatsessions.types import Message

MAX_TOKENS = 16
PARAMS = {"max_tokens": MAX_TOKENS, "temperature": 0.0}
GREETINGS = ("Hello, this is Ann.", "Bob speaking.", "Hi! Carla from Lisbon.",
             "Good morning, Dev here.", "Evening. Eva writes.", "Frank, again.",
             "Greetings from Gus.", "Hey, Hana here.")


def text(chat: int, turn: int) -> str:
    return f"{GREETINGS[chat % len(GREETINGS)]} {user_text(chat, turn)}"


class _Probe:
    """Counts what the model does in a turn: wraps one Llama's ``eval`` and one state
    cache's ``switch_to`` (instance attributes; both run on the generation thread)."""

    def __init__(self, backend: Any) -> None:
        self.evals: list[int] = []
        self.switch_s = 0.0
        llama, states = backend.llama, backend.states
        evaluate, switch = llama.eval, states.switch_to

        def counted_eval(tokens: Any) -> None:
            self.evals.append(len(tokens))
            evaluate(tokens)

        def timed_switch(*args: Any) -> None:
            started = time.perf_counter()
            try:
                switch(*args)
            finally:
                self.switch_s += time.perf_counter() - started

        llama.eval = counted_eval
        states.switch_to = timed_switch

    def reset(self) -> None:
        self.evals.clear()
        self.switch_s = 0.0

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the first evaluation of the turn: the part of the prompt not reused."""
        return self.evals[0] if self.evals else 0


class _Side:
    """One AsyncChatSessions on the local backend, driven from a private event loop."""

    def __init__(self, name: str, database_url: str, cache_bytes: int | None) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        # No automatic titles: they would run on the model between the first turns and
        # make those slower, flattering the later turns beside them.
        options: dict[str, Any] = {"auto_title": False}
        if cache_bytes is not None:
            options["local_chat_states"] = cache_bytes
        self.sessions = AsyncChatSessions(backend="local", database_url=database_url,
                                          system_prompt=SYSTEM_PROMPT, **options)
        self.run(self.sessions.open())
        self.probe: _Probe | None = None
        self.turn(self.new_chat(), "warm-up")  # loads the model
        self.probe = _Probe(self.sessions._runtime.models.backend("local"))
        states = self.states
        self.hits0, self.misses0 = states.hits, states.misses
        self.digest = hashlib.sha256()
        self.answers: list[str] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @property
    def states(self) -> Any:
        return self.sessions._runtime.models.backend("local").states  # type: ignore[attr-defined]

    def new_chat(self) -> str:
        return str(self.run(self.sessions.create_chat(params=PARAMS)))

    async def _turn(self, chat_id: str, message: str) -> dict[str, Any]:
        first: float | None = None
        answer: Message | None = None
        probe = self.probe
        if probe is not None:
            probe.reset()
        started = time.perf_counter()
        async for item in self.sessions.stream(chat_id, message):
            if isinstance(item, Message):
                answer = item
            elif first is None and item:
                first = time.perf_counter() - started
        total = time.perf_counter() - started
        assert answer is not None
        return {"ttft_s": total if first is None else first, "total_s": total,
                "completion_tokens": answer.completion_tokens, "answer": answer.content,
                "prompt_tokens_evaluated": probe.prompt_tokens if probe else 0,
                "switch_s": probe.switch_s if probe else 0.0}

    def turn(self, chat_id: str, message: str) -> dict[str, Any]:
        return dict(self.run(self._turn(chat_id, message)))

    def close(self) -> None:
        self.run(self.sessions.close())
        self.loop.close()


def run(workdir: Path, chats: int, turns: int, passes: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    log(f"embedded model: {chats} chats x {turns} turns interleaved, {passes} passes, "
        "state cache on and off in lockstep")
    sides: list[_Side] = []
    try:
        for name, cache in (("state_cache_on", None), ("state_cache_off", 0)):
            sides.append(_Side(name, f"sqlite:///{workdir / f'embedded-{name}.db'}", cache))
        # samples[side][key][turn] = one value per chat and pass
        samples = {s.name: {k: [[] for _ in range(turns)]
                            for k in ("ttft_s", "total_s", "completion_tokens",
                                      "prompt_tokens_evaluated", "switch_s")}
                   for s in sides}
        step = 0
        for pass_ in range(passes):
            ids = {s.name: [s.new_chat() for _ in range(chats)] for s in sides}
            for turn in range(turns):
                for chat in range(chats):
                    shift = step % len(sides)
                    step += 1
                    for side in [*sides[shift:], *sides[:shift]]:
                        result = side.turn(ids[side.name][chat], text(pass_ * chats + chat, turn))
                        for key, rows in samples[side.name].items():
                            rows[turn].append(result[key])
                        side.digest.update(result["answer"].encode() + b"\0")
                        side.answers.append(result["answer"])
        results = {}
        for side in sides:
            s = samples[side.name]
            states = side.states
            hits, misses = states.hits - side.hits0, states.misses - side.misses0
            tokens = sum(sum(row) for row in s["completion_tokens"])
            wall = sum(sum(row) for row in s["total_s"])
            after_first = wall - sum(sum(row) for row in s["ttft_s"])
            turns_done = sum(len(row) for row in s["total_s"])
            ttft = [median(row) for row in s["ttft_s"]]
            later = [x for row in s["ttft_s"][1:] for x in row]
            results[side.name] = {
                "ttft_first_turn_s": ttft[0], "ttft_last_turn_s": ttft[-1],
                "ttft_ratio": ttft[-1] / ttft[0],
                "ttft_later_turns_s": median(later) if later else None,
                "ttft_per_turn_median_s": ttft,
                "turn_per_turn_median_s": [median(row) for row in s["total_s"]],
                "prompt_tokens_evaluated_per_turn_median": [
                    median(row) for row in s["prompt_tokens_evaluated"]],
                "state_switch_per_turn_median_s": [median(row) for row in s["switch_s"]],
                "completion_tokens": tokens, "turns_wall_s": wall,
                "tokens_per_s": tokens / wall,
                "decode_tokens_per_s": (tokens - turns_done) / after_first,
                "state_cache": {"enabled": bool(states.enabled), "hits": hits,
                                "misses": misses,
                                "hit_rate": hits / (hits + misses) if hits + misses else None,
                                "chats_held": states.held_chats,
                                "prefixes_held": states.held_prefixes},
                "answers_sha": [side.digest.hexdigest()[:16]],
                "samples": {"ttft_s": micro(s["ttft_s"]), "total_s": micro(s["total_s"]),
                            "switch_s": micro(s["switch_s"]),
                            "completion_tokens": s["completion_tokens"],
                            "prompt_tokens_evaluated": s["prompt_tokens_evaluated"]},
            }
    finally:
        for side in sides:
            side.close()
    on, off = results["state_cache_on"], results["state_cache_off"]
    ratios = [
        Ratio("embedded_ttft_cache_on", on["ttft_ratio"], 1.15, "lower",
              f"time to first token, turn {turns} / turn 1, {chats} chats interleaved, "
              "local model, state cache on"),
        Ratio("embedded_ttft_new_chat_cache_on",
              on["ttft_first_turn_s"] / on["ttft_later_turns_s"], 1.3, "lower",
              "time to first token, a new chat's first turn / its later turns (median), "
              "state cache on"),
        Ratio("embedded_ttft_cache_off", off["ttft_ratio"], None, "lower",
              "the same with local_chat_states=0"),
        Ratio("embedded_ttft_turn_last_off_over_on",
              off["ttft_last_turn_s"] / on["ttft_last_turn_s"], None, "higher",
              f"time to first token at turn {turns}, cache off / cache on"),
    ]
    return {
        "title": "Embedded model, interleaved chats",
        "sizes": {"chats": chats, "turns": turns, "passes": passes, "max_tokens": MAX_TOKENS},
        "identical_answers_cache_on_and_off": on["answers_sha"] == off["answers_sha"],
        "answers_differing_cache_on_and_off": sum(
            a != b for a, b in zip(sides[0].answers, sides[1].answers, strict=True)),
        "results": results,
        "ratios": [r.as_dict() for r in ratios],
    }
