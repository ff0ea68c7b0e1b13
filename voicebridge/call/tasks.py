"""The tasks of one call: each named after it, a failure counted and reported, all stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from voicebridge.server.metrics import Metrics

# Teardown waits this long for the call's cancelled tasks to stop before it keeps the record regardless.
TEARDOWN_WAIT_S = 5.0


class CallTasks:
    """The call's running tasks. Once closed (the call ended) nothing new starts."""

    def __init__(
        self,
        call_sid: str,
        metrics: Metrics,
        log: logging.LoggerAdapter[logging.Logger],
        on_failure: Callable[[], None],
    ) -> None:
        self._call_sid = call_sid
        self._metrics = metrics
        self._log = log
        self._on_failure = on_failure
        self._running: set[asyncio.Task[Any]] = set()
        self.closed = False

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._running))

    def __len__(self) -> int:
        return len(self._running)

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """Run `work` as one of the call's tasks; None (and `work` never run) once closed."""
        if self.closed:
            work.close()
            return None
        task = asyncio.ensure_future(work)
        task.set_name(f"{self._call_sid}:{name}")
        self._running.add(task)
        task.add_done_callback(self._done)
        return task

    async def stop(self, requester: asyncio.Task[Any] | None) -> None:
        """Cancel every task but `requester` and wait for them, within TEARDOWN_WAIT_S."""
        # The task that asked for the end goes on to hang up or close the socket; the rest stop.
        doomed = [task for task in self._running if task is not requester]
        for task in doomed:
            task.cancel()
        if doomed:
            _, stuck = await asyncio.wait(doomed, timeout=TEARDOWN_WAIT_S)
            if stuck:
                self._log.warning("%d call task(s) still running after teardown's wait", len(stuck))

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            self._metrics.errors.labels(kind=type(exc).__name__).inc()
            self._log.error("call task %s failed: %s", task.get_name(), exc, exc_info=exc)
            self._on_failure()
