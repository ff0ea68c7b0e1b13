"""Who gets the next STT worker: confirmed turns before speculative ones, each oldest first.

Speculative transcription starts 100 ms into a pause, before the turn is known to be over. Under load
those guesses would otherwise queue ahead of turns that callers are already waiting on, so a waiting
utterance says, through `confirmed()`, whether its turn has ended; that is read when a worker frees, so
a guess whose turn is confirmed while it waits moves up. A waiter that is cancelled (the caller spoke
again or hung up) leaves the queue and never runs: no stale work reaches the CPU.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field


def always_confirmed() -> bool:
    """The priority of work with no speculation behind it (CLI, benchmarks)."""
    return True


@dataclass(slots=True)
class _Waiter:
    seq: int
    confirmed: Callable[[], bool]
    granted: asyncio.Future[None]
    since: float = field(default_factory=time.monotonic)


class SttScheduler:
    """A counting lock over the STT workers of one event loop, with turn-aware ordering."""

    def __init__(self, workers: int) -> None:
        self._free = workers
        self._waiting: list[_Waiter] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        """Utterances queued for a worker."""
        return len(self._waiting)

    async def acquire(self, confirmed: Callable[[], bool] = always_confirmed) -> float:
        """Wait for a worker; returns the seconds spent waiting. Pair with `release()`."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return 0.0
        waiter = _Waiter(next(self._order), confirmed, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.granted.done() and not waiter.granted.cancelled():
                self.release()  # granted just as we were cancelled: pass the worker on
            raise
        return time.monotonic() - waiter.since

    def release(self) -> None:
        """Give a finished worker to the most urgent waiter, or mark it free."""
        while self._waiting:
            chosen = min(self._waiting, key=lambda w: (not w.confirmed(), w.seq))
            self._waiting.remove(chosen)
            if not chosen.granted.done():
                chosen.granted.set_result(None)
                return
        self._free += 1


class LoopSchedulers:
    """One SttScheduler per event loop over the same workers: asyncio futures bind to the loop that made
    them, and an engine shared by tests or tools may be used from more than one loop."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SttScheduler] = (
            weakref.WeakKeyDictionary()
        )

    def current(self) -> SttScheduler:
        """The running loop's scheduler."""
        loop = asyncio.get_running_loop()
        scheduler = self._by_loop.get(loop)
        if scheduler is None:
            scheduler = self._by_loop[loop] = SttScheduler(self._workers)
        return scheduler

    @property
    def waiting(self) -> int:
        """Utterances queued for a worker, on every loop."""
        return sum(scheduler.waiting for scheduler in list(self._by_loop.values()))
