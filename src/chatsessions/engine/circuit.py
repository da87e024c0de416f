"""A circuit breaker: when a backend keeps failing, fail fast instead of queueing turns
behind timeouts, and let one trial call through after a cooldown to find out it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chatsessions.errors import BackendError, BackendUnavailable


def counts_as_outage(exc: BackendError) -> bool:
    """Client errors (bad request, auth...) say nothing about the backend's health."""
    code = exc.status_code
    return code is None or code >= 500 or code in (408, 429)


class CircuitBreaker:
    def __init__(self, threshold: int, cooldown: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self.opened_at >= self.cooldown else "open"

    def before_call(self) -> None:
        """Raise ``BackendUnavailable`` while open; in half-open let exactly one call try."""
        state = self.state
        if state == "closed":
            return
        if state == "half-open" and not self._trial:
            self._trial = True
            return
        assert self.opened_at is not None
        wait = max(0.0, self.cooldown - (self._clock() - self.opened_at))
        raise BackendUnavailable(
            f"the model backend is failing ({self.failures} failures in a row); "
            f"not calling it for {wait:.0f} more seconds"
        )

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial = False

    def abandon(self) -> None:
        """The call ended without a verdict (cancelled): let the next one be the trial."""
        self._trial = False

    def failure(self, exc: BackendError) -> None:
        if not counts_as_outage(exc):
            self._trial = False
            return
        self.failures += 1
        if self._trial or self.failures >= self.threshold:
            self.opened_at = self._clock()
        self._trial = False
