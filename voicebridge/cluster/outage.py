"""A shared-state outage, told once: the first failed Redis request of an outage is logged, every one is
counted, and the first success after it is logged again. Each user of Redis keeps its own."""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.exceptions import RedisError

logger = logging.getLogger("voicebridge.cluster")

# What a Redis request raises when the server is down, slow or gone.
UNREACHABLE = (RedisError, OSError, TimeoutError)


class Outage:
    def __init__(self, consequence: str, recovery: str, count: Callable[[], None]) -> None:
        """`consequence`: what is not done while Redis is down ("caller rate limits not applied");
        `recovery`: what holds again once it is back; `count`: the refusal counter to step."""
        self._consequence = consequence
        self._recovery = recovery
        self._count = count
        self.down = False

    def failed(self, exc: BaseException) -> None:
        self._count()
        if not self.down:
            logger.warning("shared state unreachable (%s): %s", type(exc).__name__, self._consequence)
        self.down = True

    def succeeded(self) -> None:
        if self.down:
            logger.info("shared state reachable again: %s", self._recovery)
        self.down = False
