"""Token counting for OpenAI-style model names: tiktoken when it can, an estimate otherwise.

tiktoken fetches its BPE tables on first use; offline, or for a model name it does not
know (vLLM, Ollama...), we fall back to a deliberately pessimistic estimate so trimming
errs on the side of fitting.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Per-message overhead of the chat format (role markers, separators).
MESSAGE_OVERHEAD = 4

#: Known context windows by model-name prefix (longest prefix wins).
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "gpt-5": 400_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4": 200_000,
}
DEFAULT_CONTEXT_WINDOW = 8_192


def context_window_for(model: str) -> int:
    matches = [prefix for prefix in CONTEXT_WINDOWS if model.startswith(prefix)]
    return CONTEXT_WINDOWS[max(matches, key=len)] if matches else DEFAULT_CONTEXT_WINDOW


def estimate_tokens(text: str) -> int:
    """About 3 characters a token: more tokens than real English text, never fewer."""
    return math.ceil(len(text) / 3)


@functools.lru_cache(maxsize=64)
def encoder_for(model: str) -> Callable[[str], int]:
    """A text -> token-count function for ``model``; cached, including the fallback."""
    try:
        import tiktoken

        encoding = tiktoken.encoding_for_model(model)
    except KeyError:
        return estimate_tokens
    except Exception as exc:  # offline: tiktoken could not fetch its tables
        log.warning("tiktoken unavailable for %s (%s); estimating token counts", model, exc)
        return estimate_tokens

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count


def count_message_tokens(model: str, content: str) -> int:
    return encoder_for(model)(content) + MESSAGE_OVERHEAD
