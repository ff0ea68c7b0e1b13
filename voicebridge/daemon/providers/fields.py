"""Lenient field access shared by the translators: providers disagree on case, types and units."""

from __future__ import annotations

import re
from typing import Any

from voicebridge.daemon.providers.events import ProtocolViolation

DTMF_DIGITS = frozenset("0123456789*#ABCD")


def section(message: dict[str, Any], name: str) -> dict[str, Any]:
    """A nested object such as `media` or `start`; missing or not an object → ProtocolViolation."""
    value = message.get(name)
    if not isinstance(value, dict):
        raise ProtocolViolation("missing_field", f"{name} object missing")
    return value


def text(obj: dict[str, Any], *names: str, default: str = "") -> str:
    """The first of `names` present, as a string (numbers arrive as strings or ints)."""
    for name in names:
        value = obj.get(name)
        if value is not None and not isinstance(value, (dict, list)):
            return str(value).strip()
    return default


def sample_rate(raw: object, default: int, supported: tuple[int, ...]) -> int:
    """A sample rate from `8000`, `"8000"` or `"8000Hz"`; unsupported → ProtocolViolation."""
    if raw in (None, ""):
        return default
    # At most 6 digits: int() of thousands of digits raises ValueError (and costs time) before any check.
    match = re.fullmatch(r"\s*(\d{1,6})\s*(?:hz)?\s*", str(raw)[:64], flags=re.IGNORECASE)
    if match is None or int(match.group(1)) not in supported:
        raise ProtocolViolation("bad_sample_rate", f"unsupported sample rate {raw!r}")
    return int(match.group(1))


def digit(raw: str) -> str:
    """One DTMF key, validated."""
    key = raw.strip().strip('"').upper()
    if len(key) != 1 or key not in DTMF_DIGITS:
        raise ProtocolViolation("bad_dtmf", f"not a keypad digit: {raw!r}")
    return key


def string_map(raw: object) -> dict[str, str]:
    """Custom parameters as a str→str dict; anything else is ignored."""
    if not isinstance(raw, dict):
        return {}
    return {str(key): str(value) for key, value in raw.items() if not isinstance(value, (dict, list))}
