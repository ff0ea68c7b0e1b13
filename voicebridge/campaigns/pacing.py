"""What limits how fast and how many: a token bucket per campaign (rate_per_minute), and the admission
rule that keeps inbound calls their share of the daemon."""

from __future__ import annotations

import math
from typing import Protocol


class CallLoad(Protocol):
    """The daemon's live calls and its capacity (server.max_concurrent_calls); the registry's, in the
    daemon (wiring.py), a test's own numbers in tests."""

    def live_calls(self) -> int:
        """Calls the daemon carries now, inbound and outbound."""
        ...

    def capacity(self) -> int:
        """The most calls the daemon carries at once."""
        ...


def outbound_room(load: CallLoad, in_flight: int, inbound_reserve: float) -> bool:
    """Whether one more outbound call may be dialled while `in_flight` of ours are ringing or live.

    Outbound never takes the reserve: at most capacity - ceil(capacity·reserve) of ours at once, so that
    many inbound slots are always free for callers. And ours plus inbound stay within capacity. Our live
    calls are in `live_calls()` too, so inbound is at least live - in_flight (ringing ones are not live
    yet); the estimate can only over-count inbound, which under-dials, never over-fills."""
    capacity = load.capacity()
    budget = capacity - math.ceil(capacity * inbound_reserve)
    inbound = max(0, load.live_calls() - in_flight)
    return in_flight < budget and inbound + in_flight < capacity


class TokenBucket:
    """`rate_per_minute` dials a minute, at most `burst` at once, on the runner's clock."""

    def __init__(self, rate_per_minute: float, burst: int, now: float) -> None:
        self._rate = rate_per_minute / 60.0
        self._burst = float(max(1, burst))
        self._tokens = self._burst
        self._at = now

    def ready(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._at) * self._rate)
        self._at = now
        return self._tokens >= 1.0

    def take(self) -> None:
        self._tokens -= 1.0
