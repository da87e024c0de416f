"""Turns in flight, detached from whoever started them, readable by many from any point.

A streamed turn runs as a task of its own that records what it yields; readers follow
that log from the position they last saw, so a reader that goes away (a dropped HTTP
connection) stops only itself: the turn goes on and is stored once, and a reader coming
back later gets the rest. The log lives in this process only; a finished turn can always
be rebuilt from storage (``runs.py``). Logs of turns in flight are as big as their answers;
finished ones are kept for the last ``keep`` turns, then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from chatsessions.errors import BackendError, ChatSessionsError
from chatsessions.types import Message, ToolCallDelta

#: finished turns whose logs stay readable from memory (the rest are rebuilt)
KEEP_FINISHED = 256

#: the seq a turn's answer gets, from the first item the turn yields
AnswerSeq = Callable[[str | ToolCallDelta | Message], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a turn yielded, numbered from 0: text deltas (and tool-call pieces, and
    the stored messages of tool rounds), then the stored answer.
    ``rebuilt``: read back from storage, where the deltas are not kept (see ``runs.py``)."""

    index: int
    item: str | ToolCallDelta | Message
    #: the seq of the answer this turn writes (the key to follow it again)
    seq: int
    rebuilt: bool = False


class TurnLog:
    """What one turn has yielded so far, and how it ended."""

    def __init__(self, chat_id: str) -> None:
        self.chat_id = chat_id
        #: the answer's seq, once the turn holds the chat (None before)
        self.seq: int | None = None
        self.items: list[str | ToolCallDelta | Message] = []
        self.error: ChatSessionsError | None = None
        self.done = False
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def add(self, item: str | ToolCallDelta | Message) -> None:
        self.items.append(item)
        self._notify()

    def finish(self, error: ChatSessionsError | None = None) -> None:
        self.error, self.done = error, True
        self._notify()

    async def ended(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the turn to end; whether it has."""
        if self.task is not None and not self.done:
            await asyncio.wait({self.task}, timeout=within)
        return self.done

    async def started(self) -> None:
        """Return once the turn has yielded something; raise its error if it failed first."""
        while not self.items and not self.done:
            await self._changed.wait()
        if not self.items and self.error is not None:
            raise self.error

    async def follow(self, after: int = -1) -> AsyncIterator[Step]:
        """The steps after ``after``, as they come, until the turn ends (raising its error
        if it failed)."""
        index = after + 1
        while True:
            changed = self._changed
            while index < len(self.items):
                assert self.seq is not None  # known before the first item is added
                yield Step(index, self.items[index], self.seq)
                index += 1
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            await changed.wait()


class LiveTurns:
    """The turns this process runs detached, by the (chat, answer seq) they write."""

    def __init__(self, keep: int = KEEP_FINISHED) -> None:
        self._keep = keep
        self._running: set[TurnLog] = set()
        self._by_answer: OrderedDict[tuple[str, int], TurnLog] = OrderedDict()

    def find(self, chat_id: str, seq: int) -> TurnLog | None:
        return self._by_answer.get((chat_id, seq))

    def start(self, turn: AsyncGenerator[str | ToolCallDelta | Message, None], chat_id: str,
              answer_seq: AnswerSeq) -> TurnLog:
        """Run ``turn`` as a task; ``answer_seq`` says, from the first item the turn yields
        (it holds the chat by then), which seq its answer will get."""
        log = TurnLog(chat_id)
        log.task = asyncio.get_running_loop().create_task(self._drive(log, turn, answer_seq))
        self._running.add(log)
        return log

    async def _drive(self, log: TurnLog,
                     turn: AsyncGenerator[str | ToolCallDelta | Message, None],
                     answer_seq: AnswerSeq) -> None:
        error: ChatSessionsError | None = None
        try:
            async with contextlib.aclosing(turn):
                async for item in turn:
                    if log.seq is None:
                        log.seq = await answer_seq(item)
                        self._index(log)
                    log.add(item)
        except ChatSessionsError as exc:
            error = exc
        except asyncio.CancelledError:
            error = BackendError("cancelled before the answer was stored")
        except Exception as exc:
            error = BackendError(f"internal error: {exc!r}")
        finally:
            log.finish(error)
            self._running.discard(log)

    def _index(self, log: TurnLog) -> None:
        assert log.seq is not None
        self._by_answer[(log.chat_id, log.seq)] = log
        while len(self._by_answer) > self._keep:
            oldest = next(iter(self._by_answer))
            if not self._by_answer[oldest].done:
                break  # a turn in flight is never dropped; the oldest finished go first
            del self._by_answer[oldest]

    async def close(self) -> None:
        """Cancel the turns still in flight and wait for them to record their failure."""
        tasks = [log.task for log in self._running if log.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
