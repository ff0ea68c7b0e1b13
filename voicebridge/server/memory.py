"""Give the heap that calls freed back to the OS once the daemon is idle.

Concurrent inference (Whisper, Silero, Piper, the Azure SDK) frees its buffers at the end of a turn, but
glibc keeps freed pages in its arenas, so a daemon's RSS drifts up to the high-water mark of its busiest
minute and stays there, which looks like a leak to anyone watching RSS. `malloc_trim(0)` hands the free
pages back; it walks every arena, so it runs in a worker thread and only when no call is live.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import resource
import time
from collections.abc import Callable

from voicebridge.admission.registry import CallRegistry

logger = logging.getLogger("voicebridge.memory")


def glibc_malloc_trim() -> Callable[[], bool] | None:
    """glibc's `malloc_trim(0)` as a callable, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: bool(trim(0))


def rss_bytes() -> int:
    """This process's resident set size now (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


class IdleMemoryReturner:
    """Trims the heap once after each busy spell, when the last call has ended."""

    def __init__(
        self, registry: CallRegistry, trim: Callable[[], bool] | None, interval_s: float = 5.0
    ) -> None:
        self._registry = registry
        self._trim = trim
        self._interval_s = interval_s
        self.trims = 0
        self.released_bytes = 0
        self.last_trim_ms = 0.0

    async def run(self) -> None:
        """Check every `interval_s`; trim when calls have ended since the last trim and none is live."""
        if self._trim is None:
            return
        trimmed_after = self._registry.finished_total
        while True:
            await asyncio.sleep(self._interval_s)
            finished = self._registry.finished_total
            if self._registry.active_count or finished == trimmed_after:
                continue
            trimmed_after = finished
            before, started = rss_bytes(), time.perf_counter()
            await asyncio.to_thread(self._trim)
            self.last_trim_ms = (time.perf_counter() - started) * 1000
            released = max(0, before - rss_bytes())
            self.trims += 1
            self.released_bytes += released
            logger.debug(
                "idle: returned %.1f MB of freed heap to the OS in %.0f ms",
                released / 2**20,
                self.last_trim_ms,
            )
