"""DTMF digit collection as a deterministic call state: ends on '#', a digit count, or a quiet timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

TERMINATOR = "#"


@dataclass(slots=True)
class DigitCollector:
    """Gathers keypad digits for one call; the call asks it what a digit or a timeout means."""

    max_digits: int = 12
    timeout_s: float = 3.0
    _digits: list[str] = field(default_factory=list)

    @property
    def collecting(self) -> bool:
        return bool(self._digits)

    @property
    def pending(self) -> str:
        return "".join(self._digits)

    def press(self, digit: str) -> str | None:
        """Add a digit; return the collected string when this digit completes the entry."""
        if digit == TERMINATOR:
            return self._take() if self._digits else None
        self._digits.append(digit)
        return self._take() if len(self._digits) >= self.max_digits else None

    def expire(self) -> str | None:
        """The quiet timeout passed: whatever was collected is the entry."""
        return self._take() if self._digits else None

    def _take(self) -> str:
        entry, self._digits = "".join(self._digits), []
        return entry


class Keypad:
    """A call's keypad: the entry being collected, and the quiet timeout that completes it."""

    def __init__(self, on_timeout: Callable[[str], None]) -> None:
        self.collector = DigitCollector()
        self._on_timeout = on_timeout
        self._timer: asyncio.TimerHandle | None = None

    def press(self, digit: str) -> str | None:
        """Add a key; return the entry it completes. An entry left open completes at its quiet timeout."""
        self.stop()
        entry = self.collector.press(digit)
        if entry is None and self.collector.collecting:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.collector.timeout_s, self.expire)
        return entry

    def expire(self) -> None:
        """The quiet timeout passed: whatever was collected is the entry."""
        entry = self.collector.expire()
        if entry is not None:
            self._on_timeout(entry)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
