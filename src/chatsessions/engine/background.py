"""Turns run in the background: the task, and the run's row that tells every replica
where it stands.

The turn itself is a detached turn (``live.py``) under the chat's lease as any other.
Beside it, a watcher renews the run's expiry every ``poll`` seconds, and in the same
statement learns whether a cancel was asked for on any replica, then records how the turn
ended. A process that dies stops renewing: once the expiry passes, whoever reads the run
marks it failed (``fail_abandoned_runs``), so a run is never stuck in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import timedelta

from chatsessions.engine.live import AnswerSeq, LiveTurns, TurnLog
from chatsessions.store import Store
from chatsessions.types import Message, Run, RunStatus, ToolCallDelta, utcnow

#: the longest a cancel asked of another replica waits to be seen, in seconds
CANCEL_POLL = 1.0
CANCELLED = "cancelled"
STOPPED = "interrupted: the service stopped during this response"


class BackgroundRuns:
    def __init__(self, store: Store, live: LiveTurns, owner: str, ttl: float) -> None:
        self.store = store
        self.live = live
        self.owner = owner
        self.ttl = ttl
        self.poll = min(CANCEL_POLL, ttl / 3)
        self._logs: dict[str, TurnLog] = {}
        self._cancelled: set[str] = set()
        self._watchers: dict[str, asyncio.Task[None]] = {}

    def expiry(self) -> timedelta:
        return timedelta(seconds=self.ttl)

    def log(self, run_id: str) -> TurnLog | None:
        """The turn of a run this process is running, while it runs."""
        return self._logs.get(run_id)

    def launch(self, run: Run, turn: AsyncGenerator[str | ToolCallDelta | Message, None],
               answer_seq: AnswerSeq) -> None:
        """Run ``turn`` (already stored as ``run``, owned by this process) to its end."""
        log = self.live.start(turn, run.chat_id, answer_seq)
        self._logs[run.id] = log
        watcher = asyncio.get_running_loop().create_task(self._watch(run.id, log))
        self._watchers[run.id] = watcher
        watcher.add_done_callback(lambda _: self._watchers.pop(run.id, None))

    async def settled(self, run_id: str) -> None:
        """Return once a run of this process has stored how it ended."""
        watcher = self._watchers.get(run_id)
        if watcher is not None:
            await asyncio.wait({watcher})

    def cancel(self, run_id: str) -> bool:
        """Stop a run of this process now; False if it runs elsewhere (its owner sees the
        stored request within ``poll`` seconds)."""
        log = self._logs.get(run_id)
        if log is None or log.task is None:
            return False
        self._cancelled.add(run_id)
        log.task.cancel()
        return True

    async def _watch(self, run_id: str, log: TurnLog) -> None:
        store = self.store
        try:
            await store.update_run(run_id, self.owner, RunStatus.IN_PROGRESS)
            seq_stored = False
            while not await log.ended(self.poll):
                if log.seq is not None and not seq_stored:
                    await store.update_run(run_id, self.owner, RunStatus.IN_PROGRESS,
                                           seq=log.seq)
                    seq_stored = True
                asked = await store.renew_run(run_id, self.owner, utcnow() + self.expiry())
                if asked is not False:  # a cancel, or the run is no longer ours to finish
                    self.cancel(run_id)
                    await log.ended(self.ttl)
        finally:
            self._logs.pop(run_id, None)
            error: str | None
            if run_id in self._cancelled:
                self._cancelled.discard(run_id)
                status, error = RunStatus.CANCELLED, CANCELLED
            elif log.done and log.error is None:
                status, error = RunStatus.COMPLETED, None
            else:
                status = RunStatus.FAILED
                error = str(log.error) if log.done and log.error is not None else STOPPED
            await asyncio.shield(store.update_run(run_id, self.owner, status, seq=log.seq,
                                                  error=error))

    async def close(self) -> None:
        """Wait for the watchers to record how their runs ended (the turns are cancelled
        by :meth:`LiveTurns.close` first)."""
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
