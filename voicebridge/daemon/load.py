"""Admission by load: refuse new calls while the daemon is too busy, so calls already in keep their pace.

Two signs are watched. Turns waiting for a speech-recognition worker: on two cores a queue that keeps
growing means every caller's reply comes later, so the 90th percentile of recent waits is compared with
`calls.overload_stt_wait_ms`. And the event loop's lag (a timer's lateness, its 90th percentile over
5 s against `calls.overload_loop_lag_ms`): when it grows, outbound audio frames go out late and every
call stutters. Either over its limit makes new calls hear the busy
message (or the provider's fallback path) until the figures come back down.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

# Recent enough to follow a load change within seconds, long enough that one slow turn does not flip it.
STT_WINDOW_S = 15.0
STT_MIN_SAMPLES = 3
LAG_WINDOW_S = 5.0
LAG_PROBE_S = 0.1


class OverloadGuard:
    """Keeps recent STT queue waits and loop lags; `refusal()` says "overloaded" when either is too high."""

    def __init__(self, max_stt_wait_s: float, max_loop_lag_s: float) -> None:
        self.max_stt_wait_s = max_stt_wait_s
        self.max_loop_lag_s = max_loop_lag_s
        self._stt_waits: deque[tuple[float, float]] = deque()
        self._lags: deque[tuple[float, float]] = deque()

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
        return ""

    async def watch_loop(self) -> None:
        """Measure the event loop's lag every LAG_PROBE_S until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            self.observe_loop_lag(max(0.0, loop.time() - expected))


def _expire(samples: deque[tuple[float, float]], before: float) -> None:
    while samples and samples[0][0] < before:
        samples.popleft()
