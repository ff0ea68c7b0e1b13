"""Calling hours: a daily window in the campaign's own time zone, possibly across midnight (22:00-06:00).

Pure: the time is always handed in (the runner's injected clock), so tests can stand at any instant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_HOURS = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")


def parse_hours(text: str) -> tuple[str, str]:
    """ "09:00-21:00" as ("09:00", "21:00"); ValueError for anything else (24:00 only as an end)."""
    match = _HOURS.fullmatch(text.strip()) if len(text) <= 16 else None
    if match is None or (match.group(3) == "24" and match.group(4) != "00"):
        raise ValueError("calling hours must be HH:MM-HH:MM, like 09:00-21:00")
    if match.group(1, 2) == match.group(3, 4):
        raise ValueError("calling hours must not start and end at the same minute")
    start, end = text.strip().split("-")
    return start, end


def check_zone(name: str) -> str:
    """An IANA time zone name, or ValueError."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ValueError("time zone must be an IANA name such as Asia/Kolkata")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name[:64]!r}; use an IANA name such as Asia/Kolkata") from None
    return name


def _clock_time(text: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    return time(0, 0) if hours == 24 else time(hours, minutes)


@dataclass(frozen=True, slots=True)
class CallingHours:
    """[start, end) each day in `zone`; start > end is a window across midnight."""

    start: str = "09:00"
    end: str = "21:00"
    zone: str = "Asia/Kolkata"

    def _bounds(self) -> tuple[time, time, ZoneInfo]:
        return _clock_time(self.start), _clock_time(self.end), ZoneInfo(self.zone)

    def is_open(self, now: float) -> bool:
        """Whether `now` (Unix seconds) falls inside the window."""
        start, end, zone = self._bounds()
        local = datetime.fromtimestamp(now, UTC).astimezone(zone).time()
        if end == time(0, 0):  # "…-24:00": until midnight
            return local >= start
        if start < end:
            return start <= local < end
        return local >= start or local < end

    def seconds_until_open(self, now: float) -> float:
        """0 when open; else how long until the window next opens (local wall time, so DST is honoured)."""
        if self.is_open(now):
            return 0.0
        start, _end, zone = self._bounds()
        local = datetime.fromtimestamp(now, UTC).astimezone(zone)
        opening = local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
        if opening <= local:
            opening = (opening + timedelta(days=1)).replace(tzinfo=zone)
        return max(0.0, opening.timestamp() - now)
