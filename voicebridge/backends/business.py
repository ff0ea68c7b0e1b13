"""Per-number business settings from the backend, fetched with a tight bound and cached briefly."""

from __future__ import annotations

import asyncio
import logging
import time

from voicebridge.backends.base import BusinessLookup, BusinessSettings

logger = logging.getLogger("voicebridge.business")

# The caller is waiting for the greeting: a slow backend gets this long, then the config's settings apply.
LOOKUP_TIMEOUT_S = 1.5
CACHE_TTL_S = 300.0
CACHE_SIZE = 1000


class BusinessDirectory:
    """Looks up the called number's settings (greeting, transfer number, limits) for each new call."""

    def __init__(
        self, lookup: BusinessLookup | None, timeout_s: float = LOOKUP_TIMEOUT_S, ttl_s: float = CACHE_TTL_S
    ) -> None:
        # None: the backend has no per-number settings, and every call uses the config's.
        self._lookup = lookup
        self._timeout = timeout_s
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, BusinessSettings | None]] = {}

    async def settings_for(self, to_number: str) -> BusinessSettings | None:
        """The settings for a called number, or None (use the daemon's config)."""
        if self._lookup is None or not to_number:
            return None
        now = time.monotonic()
        cached = self._cache.get(to_number)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            async with asyncio.timeout(self._timeout):
                found = await self._lookup.business(to_number)
        except TimeoutError:
            logger.warning(
                "business settings for %s took over %.1fs; using the config's", to_number, self._timeout
            )
            return cached[1] if cached else None
        if len(self._cache) >= CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[to_number] = (now, found)
        return found
