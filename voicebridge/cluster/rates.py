"""The per-caller rate limit (`calls.rate_limit_calls` in `calls.rate_limit_window_s`): counted in this
process on one machine, or in Redis so that it holds across every daemon behind the balancer.

A caller refused by one node must be refused by all: otherwise the balancer spreads a flood over N nodes
and the limit is N times looser. The shared count is one atomic script per call (Redis's own clock, so
the nodes' clocks need not agree). When Redis cannot be reached the call is let through, counted and
logged once per outage: a shared-state outage must not turn every caller away.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from voicebridge.cluster.keys import ClusterKeys
from voicebridge.cluster.outage import UNREACHABLE, Outage

if TYPE_CHECKING:
    from redis.asyncio import Redis

# KEYS[1]: the caller's window; ARGV: window seconds, limit, a member unique to this call.
_ADMIT = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], t, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return 1
"""


class CallerRates(Protocol):
    """Counts a call from a number; False when that number is over its limit in the window."""

    async def admit(self, from_number: str, limit: int, window_s: float) -> bool:
        """Count this call and say whether it may go ahead."""
        ...


class LocalCallerRates:
    """The count kept in this process (one daemon, or no `[cluster] redis_url`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._recent_calls: dict[str, deque[float]] = {}

    async def admit(self, from_number: str, limit: int, window_s: float) -> bool:
        now = self._clock()
        recent = self._recent_calls.setdefault(from_number, deque())
        while recent and now - recent[0] > window_s:
            recent.popleft()
        if len(recent) >= limit:
            return False
        recent.append(now)
        # Forget callers quiet for a whole window so the table cannot grow without bound.
        for number in [n for n, times in self._recent_calls.items() if now - times[-1] > window_s]:
            del self._recent_calls[number]
        return True


class SharedCallerRates:
    """The count kept in Redis, shared by every node with the same `cluster.key_prefix`."""

    def __init__(self, redis: Redis, prefix: str, node_id: str, on_unreachable: Callable[[], None]) -> None:
        self._keys = ClusterKeys(prefix)
        self._node_id = node_id
        self._calls = itertools.count()
        self._script = redis.register_script(_ADMIT)
        self._outage = Outage("caller rate limits not applied", "caller rate limits shared", on_unreachable)

    async def admit(self, from_number: str, limit: int, window_s: float) -> bool:
        # The number is hashed so that keys stay short and bounded whatever a webhook sends. (Not a secret:
        # phone numbers are few enough that whoever can read Redis can find a number from its hash.)
        digest = hashlib.sha256(from_number.encode("utf-8", "replace")).hexdigest()[:32]
        member = f"{self._node_id}:{time.time_ns()}:{next(self._calls)}"
        try:
            allowed = await self._script(keys=[self._keys.rate(digest)], args=[window_s, limit, member])
        except UNREACHABLE as exc:
            self._outage.failed(exc)
            return True
        self._outage.succeeded()
        return bool(allowed)
