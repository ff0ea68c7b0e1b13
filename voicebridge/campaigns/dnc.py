"""The do-not-call list: a file of E.164 numbers, one a line (`#` comments), re-read whenever it changes.

Checked before every dial. The file is looked at (one stat) on each check, so a number added while a
campaign runs is honoured from its next dial; a file that cannot be read refuses every dial rather than
dialling numbers it may hold (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from voicebridge.campaigns.numbers_csv import normalise_number

logger = logging.getLogger("voicebridge.campaigns")

# A DNC list is operator-maintained; far past this it is not the file that was meant.
MAX_DNC_BYTES = 64 * 1024 * 1024


class DncUnreadable(Exception):
    """The configured DNC file cannot be read: nothing may be dialled until it can."""


class DoNotCall:
    """The list at `path` ("" : none, every number may be dialled)."""

    def __init__(self, path: str) -> None:
        self._path = Path(path) if path else None
        self._stamp: tuple[int, int, int] | None = None
        self._numbers: frozenset[str] = frozenset()

    async def blocks(self, number: str) -> bool:
        """True when `number` is on the list; DncUnreadable when the list cannot be read."""
        if self._path is None:
            return False
        await asyncio.to_thread(self._refresh)
        return number in self._numbers

    def _refresh(self) -> None:
        assert self._path is not None
        try:
            info = os.stat(self._path)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp == self._stamp:
                return
            if info.st_size > MAX_DNC_BYTES:
                raise DncUnreadable(f"do-not-call file {self._path} is over {MAX_DNC_BYTES} bytes")
            text = self._path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DncUnreadable(f"do-not-call file {self._path}: {exc.strerror or exc}") from None
        numbers = set()
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry and (number := normalise_number(entry)):
                numbers.add(number)
        self._numbers, self._stamp = frozenset(numbers), stamp
        logger.info("do-not-call list %s: %d number(s)", self._path, len(numbers))
