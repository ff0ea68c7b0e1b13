"""Admission by load: refuse new calls while the daemon is too busy, so calls already in keep their pace.

Two signs are watched. Turns waiting for a speech-recognition worker: on two cores a queue that keeps
growing means every caller's reply comes later, so the 90th percentile of recent waits is compared with
`calls.overload_stt_wait_ms`. And the event loop's lag (a timer's lateness, its 90th percentile over
5 s against `calls.overload_loop_lag_ms`): when it grows, outbound audio frames go out late and every
call stutters. Either over its limit makes new calls hear the busy message (or the provider's
fallback path) until the figures come back down.

Both signs lag admission: calls that arrive together are all let in before their first turn has queued.
So the guard also predicts. It keeps the STT compute the calls of the last minute needed per call-second,
and refuses a call that would push the workers past `calls.overload_stt_utilisation` of their time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

# Recent enough to follow a load change within seconds, long enough that one slow turn does not flip it.
STT_WINDOW_S = 15.0
STT_MIN_SAMPLES = 3
LAG_WINDOW_S = 5.0
LAG_PROBE_S = 0.1
# A minute of calls tells what a call costs; fewer call-seconds than this and the guard does not guess.
DEMAND_WINDOW_S = 60.0
DEMAND_MIN_CALL_SECONDS = 60.0


class OverloadGuard:
    """Keeps recent STT waits, loop lags and STT cost per call; `refusal()` says "overloaded" on any sign."""

    def __init__(
        self, max_stt_wait_s: float, max_loop_lag_s: float, max_stt_utilisation: float = 0.0
    ) -> None:
        self.max_stt_wait_s = max_stt_wait_s
        self.max_loop_lag_s = max_loop_lag_s
        self.max_stt_utilisation = max_stt_utilisation
        self._stt_waits: deque[tuple[float, float]] = deque()
        self._lags: deque[tuple[float, float]] = deque()
        self._stt_work: deque[tuple[float, float]] = deque()
        self._call_seconds: deque[tuple[float, float]] = deque()
        self._active_calls: Callable[[], int] = lambda: 0
        self.stt_workers = 1

    def count_calls(self, active_calls: Callable[[], int]) -> None:
        """Where the guard reads how many calls are live (the registry, which is built after it)."""
        self._active_calls = active_calls

    def observe_stt_work(self, seconds: float) -> None:
        """Worker time one transcription took, queue wait excluded; speculative passes count too."""
        now = time.monotonic()
        self._stt_work.append((now, seconds))
        _expire(self._stt_work, now - DEMAND_WINDOW_S)

    def observe_call_seconds(self, call_seconds: float) -> None:
        """Live calls × the seconds they were live for, since the last observation."""
        if call_seconds > 0:
            self._call_seconds.append((time.monotonic(), call_seconds))

    def stt_seconds_per_call_second(self) -> float | None:
        """What one live call has recently cost the STT workers; None until a minute of calls was seen."""
        now = time.monotonic()
        _expire(self._stt_work, now - DEMAND_WINDOW_S)
        _expire(self._call_seconds, now - DEMAND_WINDOW_S)
        call_seconds = sum(seconds for _, seconds in self._call_seconds)
        if call_seconds < DEMAND_MIN_CALL_SECONDS:
            return None
        return sum(seconds for _, seconds in self._stt_work) / call_seconds

    def call_capacity(self) -> int | None:
        """How many calls the STT workers can carry at the configured utilisation; None if unknown."""
        demand = self.stt_seconds_per_call_second()
        if self.max_stt_utilisation <= 0 or not demand:
            return None
        return max(1, math.floor(round(self.stt_workers * self.max_stt_utilisation / demand, 6)))

    def observe_stt_wait(self, seconds: float) -> None:
        """One turn's wait for a free STT worker."""
        now = time.monotonic()
        self._stt_waits.append((now, seconds))
        _expire(self._stt_waits, now - STT_WINDOW_S)

    def observe_loop_lag(self, seconds: float) -> None:
        """How late one timer fired on the event loop."""
        now = time.monotonic()
        self._lags.append((now, seconds))
        _expire(self._lags, now - LAG_WINDOW_S)

    def stt_wait_p90(self) -> float:
        """The 90th percentile of recent STT waits (0 with too few to tell)."""
        _expire(self._stt_waits, time.monotonic() - STT_WINDOW_S)
        if len(self._stt_waits) < STT_MIN_SAMPLES:
            return 0.0
        waits = sorted(wait for _, wait in self._stt_waits)
        return waits[min(len(waits) - 1, int(0.9 * len(waits)))]

    def loop_lag(self) -> float:
        """The 90th percentile of recent event-loop lags.

        Not the worst: one stall (a garbage collection, a model load, the idle heap trim) says nothing of
        load, and refusing calls for the window after it turned callers away from an idle daemon. A loop
        that is really behind is late on most of its probes.
        """
        _expire(self._lags, time.monotonic() - LAG_WINDOW_S)
        lags = sorted(lag for _, lag in self._lags)
        return lags[min(len(lags) - 1, int(0.9 * len(lags)))] if lags else 0.0

    def refusal(self) -> str:
        """ "overloaded" while a new call would slow the calls already in, else ""."""
        if self.max_stt_wait_s > 0 and self.stt_wait_p90() > self.max_stt_wait_s:
            return "overloaded"
        if self.max_loop_lag_s > 0 and self.loop_lag() > self.max_loop_lag_s:
            return "overloaded"
        capacity = self.call_capacity()
        if capacity is not None and self._active_calls() >= capacity:
            return "overloaded"
        return ""

    async def watch_loop(self) -> None:
        """Measure the event loop's lag every LAG_PROBE_S until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            now = loop.time()
            self.observe_loop_lag(max(0.0, now - started - LAG_PROBE_S))
            # The same tick integrates live calls over time, the denominator of a call's STT cost.
            self.observe_call_seconds(self._active_calls() * (now - started))


def _expire(samples: deque[tuple[float, float]], before: float) -> None:
    while samples and samples[0][0] < before:
        samples.popleft()
