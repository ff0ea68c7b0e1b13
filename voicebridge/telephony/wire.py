"""Lenient field access shared by the translators: providers disagree on case, types and units."""

from __future__ import annotations

import json
import re
from typing import Any

from voicebridge.audio.codecs import b64decode_payload
from voicebridge.telephony.events import ProtocolViolation
from voicebridge.telephony.sids import SID_RULE, is_valid_sid

DTMF_DIGITS = frozenset("0123456789*#ABCD")
# Every value from the wire is bounded before it is kept: a stream sid is echoed in every outbound frame,
# numbers and parameters go into records and logs. Sids and numbers follow the daemon's one rule (sids.py).
MAX_TEXT_CHARS = 256
# Mark names are ours (a uuid); an echo with a longer one is not a mark we sent.
MAX_MARK_NAME_CHARS = 128
MAX_PARAMETERS = 32
MAX_PARAMETER_KEY_CHARS = 64


def load_message(text: str) -> dict[str, Any]:
    """Decode one text frame as a JSON object, or raise ProtocolViolation."""
    try:
        message = json.loads(text)
    # ValueError covers JSONDecodeError and Python's limit on huge integer literals (4300 digits).
    except (ValueError, RecursionError) as exc:
        raise ProtocolViolation("malformed_json", str(exc)[:120]) from None
    if not isinstance(message, dict):
        raise ProtocolViolation("malformed_json", f"expected an object, got {type(message).__name__}")
    return message


def event_name(message: dict[str, Any]) -> str:
    """The message's event name, lower-cased (`event` or `Event`, as seen in the wild); "" if none."""
    name = message.get("event", message.get("Event", ""))
    return name.strip().lower() if isinstance(name, str) else ""


def payload_bytes(media: dict[str, Any]) -> bytes:
    """The decoded base64 `payload` of a media object; missing or not base64 → ProtocolViolation."""
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise ProtocolViolation("missing_field", "media.payload missing")
    try:
        return b64decode_payload(payload)
    except ValueError as exc:
        raise ProtocolViolation("bad_base64", str(exc)[:120]) from None


def section(message: dict[str, Any], name: str) -> dict[str, Any]:
    """A nested object such as `media` or `start`; missing or not an object → ProtocolViolation."""
    value = message.get(name)
    if not isinstance(value, dict):
        raise ProtocolViolation("missing_field", f"{name} object missing")
    return value


def text(obj: dict[str, Any], *names: str, default: str = "", limit: int = MAX_TEXT_CHARS) -> str:
    """The first of `names` present, as a string (numbers arrive as strings or ints), at most `limit`
    characters long: a longer one is a ProtocolViolation, never truncated into something else."""
    for name in names:
        value = obj.get(name)
        if value is not None and not isinstance(value, (dict, list)):
            raw = value if isinstance(value, str) else str(value)
            if len(raw) > limit:
                raise ProtocolViolation("field_too_long", f"{name} of {len(raw)} characters (limit {limit})")
            return raw.strip()
    return default


def sid(obj: dict[str, Any], kind: str, *names: str) -> str:
    """A provider identifier (stream, call or account sid), "" when absent; one that breaks the daemon's
    one sid rule (sids.SID_RULE) is a ProtocolViolation of `kind` (bad_call_sid, bad_stream_sid, ...)."""
    value = text(obj, *names)  # MAX_TEXT_CHARS first: no pattern is run over a megabyte
    if value and not is_valid_sid(value):
        raise ProtocolViolation(kind, f"{names[0]} {value[:40]!r} is not {SID_RULE}")
    return value


def start_sids(
    message: dict[str, Any], body: dict[str, Any], stream_names: tuple[str, ...], call_names: tuple[str, ...]
) -> tuple[str, str]:
    """A start's (stream sid, call sid): the stream sid at the top of the message or in its `start` body,
    the call sid in the body; a start with neither is a ProtocolViolation."""
    stream_sid = sid(message, "bad_stream_sid", *stream_names) or sid(body, "bad_stream_sid", *stream_names)
    call_sid = sid(body, "bad_call_sid", *call_names)
    if not call_sid and not stream_sid:
        raise ProtocolViolation("missing_field", f"start has neither {call_names[0]} nor {stream_names[0]}")
    return stream_sid, call_sid


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
    """Custom parameters as a bounded str→str dict (nested values are ignored); too many or too long
    entries are a ProtocolViolation."""
    if not isinstance(raw, dict):
        return {}
    if len(raw) > MAX_PARAMETERS:
        raise ProtocolViolation("field_too_long", f"{len(raw)} custom parameters (limit {MAX_PARAMETERS})")
    parameters: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, (dict, list)):
            continue
        name, content = str(key), value if isinstance(value, str) else str(value)
        if len(name) > MAX_PARAMETER_KEY_CHARS or len(content) > MAX_TEXT_CHARS:
            raise ProtocolViolation("field_too_long", f"custom parameter {name[:20]!r} too long")
        parameters[name] = content
    return parameters
