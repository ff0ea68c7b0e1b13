"""Per-number business settings: the backend's (fetched with a tight bound and cached briefly) over the
config's `[numbers."..."]` tables, field by field; whatever neither sets is the global config's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from voicebridge.backends.base import BusinessLookup, BusinessSettings
from voicebridge.config.numbers import NumberConfig

logger = logging.getLogger("voicebridge.business")

# The caller is waiting for the greeting: a slow backend gets this long, then the config's settings apply.
LOOKUP_TIMEOUT_S = 1.5
CACHE_TTL_S = 300.0
CACHE_SIZE = 1000


class ConfigNumbers:
    """The BusinessLookup of the config's `[numbers."..."]` tables (deployments without a node backend)."""

    def __init__(self, numbers: Mapping[str, NumberConfig]) -> None:
        self._numbers = numbers

    async def business(self, to_number: str) -> BusinessSettings | None:
        found = self._numbers.get(to_number)
        if found is None:
            return None
        return BusinessSettings(
            greeting=found.greeting or None,
            voice=found.voice or None,
            language=found.language,
            system_prompt=found.system_prompt or None,
            transfer_number=found.transfer_number or None,
            max_call_minutes=found.max_call_minutes,
        )


def merged(first: BusinessSettings | None, then: BusinessSettings | None) -> BusinessSettings | None:
    """`first`'s settings, each one it leaves unset taken from `then`."""
    if first is None or then is None:
        return first or then
    return BusinessSettings(
        greeting=first.greeting if first.greeting is not None else then.greeting,
        voice=first.voice if first.voice is not None else then.voice,
        language=first.language if first.language is not None else then.language,
        system_prompt=first.system_prompt if first.system_prompt is not None else then.system_prompt,
        transfer_number=first.transfer_number if first.transfer_number is not None else then.transfer_number,
        max_call_minutes=first.max_call_minutes
        if first.max_call_minutes is not None
        else then.max_call_minutes,
    )


class BusinessDirectory:
    """Looks up the called number's settings (greeting, voice, language, system prompt, transfer number,
    limits) for each new call: the backend's answer over the config's table for the number."""

    def __init__(
        self,
        lookup: BusinessLookup | None,
        timeout_s: float = LOOKUP_TIMEOUT_S,
        ttl_s: float = CACHE_TTL_S,
        local: ConfigNumbers | None = None,
    ) -> None:
        # None: the backend has no per-number settings, and every call uses the config's.
        self._lookup = lookup
        self._local = local
        self._timeout = timeout_s
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, BusinessSettings | None]] = {}

    async def settings_for(self, to_number: str) -> BusinessSettings | None:
        """The settings for a called number, or None (use the daemon's config)."""
        local = await self._local.business(to_number) if self._local is not None and to_number else None
        return merged(await self._remote(to_number), local)

    async def _remote(self, to_number: str) -> BusinessSettings | None:
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
