"""The circuit breaker in front of the backend: a dead backend is noticed once, not by every call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from voicebridge.backends.base import BackendError

logger = logging.getLogger("voicebridge.backend")


class BackendUnavailable(BackendError):
    """The circuit breaker is open: the backend failed repeatedly and is not being asked for now."""


class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `reset_after` seconds one probe is let through."""

    def __init__(
        self, failures: int = 5, reset_after: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_after = reset_after
        self._clock = clock
        self._count = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        """closed: all requests go; open: all fail fast; half_open: the next request is the probe."""
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.reset_after else "open"

    def acquire(self) -> bool:
        """Let a request through (True when it is the half-open probe) or raise BackendUnavailable."""
        if self._opened_at is None:
            return False
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        raise BackendUnavailable(
            f"backend unavailable: {self._count} failures in a row, not asking it for up to "
            f"{self.reset_after:g}s"
        )

    def record(self, ok: bool) -> None:
        """The outcome of a request that reached a verdict on the backend's health."""
        self._probing = False
        if ok:
            if self._opened_at is not None:
                logger.info("backend answering again; circuit closed")
            self._count, self._opened_at = 0, None
            return
        self._count += 1
        # A failed probe re-opens at once; otherwise only a run of failures opens the circuit.
        if self._opened_at is not None or self._count >= self.failures:
            if self._opened_at is None:
                logger.warning(
                    "backend failed %d times in a row; failing fast for %gs", self._count, self.reset_after
                )
            self._opened_at = self._clock()

    def release(self, probe: bool) -> None:
        """A request ended without a verdict (cancelled, a local error): free the probe slot it held."""
        if probe:
            self._probing = False


class Attempt:
    """One request's claim on the breaker; settles it once, whatever ends the request."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._probe = breaker.acquire()
        self._settled = False

    def status(self, status: int) -> None:
        # Any 2xx-4xx answer proves the backend alive, even a refusal; 5xx means it is struggling.
        self._settle(status < 500)

    def failed(self) -> None:
        self._settle(False)

    def _settle(self, ok: bool) -> None:
        if not self._settled:
            self._settled = True
            self._breaker.record(ok)

    def abandon(self) -> None:
        if not self._settled:
            self._settled = True
            self._breaker.release(self._probe)
