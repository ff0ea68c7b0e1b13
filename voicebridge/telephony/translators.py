"""Provider wire protocols as pure translators: wire JSON ⇄ internal events, no I/O.

`translator_for_start` picks the provider from the `start` event's shape, so one WebSocket endpoint serves
Exotel (snake_case, PCM16) and Twilio (camelCase, μ-law 8 kHz).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from voicebridge.telephony.events import InboundEvent, ProtocolViolation, ProviderName, Start


class Translator(Protocol):
    """One stream's translator: parses inbound messages and serialises what the call sends."""

    provider: ProviderName
    sample_rate: int

    @property
    def outbound_chunk_ms(self) -> int:
        """Audio per outbound media message: whole 20 ms frames, enough to meet the provider's minimum
        chunk on the wire in the stream's encoding."""
        ...

    def parse(self, message: dict[str, Any]) -> InboundEvent:
        """The internal event for one decoded wire message; raises ProtocolViolation. Pure: a `start`
        changes nothing until the stream `accept`s it."""
        ...

    def accept(self, start: Start) -> None:
        """Adopt a start the stream accepted: its stream sid, encoding and rate apply from now on."""
        ...

    def media(self, pcm16: bytes) -> str:
        """A media message carrying PCM16 at the stream's rate."""
        ...

    def mark(self, name: str) -> str:
        """A mark message the provider echoes once the audio before it has played."""
        ...

    def clear(self) -> str:
        """A message telling the provider to drop the audio it has queued."""
        ...


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


def is_twilio_start(message: dict[str, Any]) -> bool:
    """Twilio's start is camelCase (`streamSid`, `callSid`, `mediaFormat`) and carries μ-law."""
    start = message.get("start")
    body = start if isinstance(start, dict) else {}
    if "mediaFormat" in body:
        encoding = body["mediaFormat"].get("encoding", "") if isinstance(body["mediaFormat"], dict) else ""
        return "mulaw" in str(encoding).lower()
    return "callSid" in body and "call_sid" not in body and "tracks" in body


def translator_for_start(message: dict[str, Any], url_rate: int | None = None) -> Translator:
    """A translator for the stream that this `start` message opens; `url_rate` is the stream URL's
    `sample-rate` (Exotel), None when the URL has none."""
    from voicebridge.telephony.exotel import ExotelTranslator
    from voicebridge.telephony.twilio import TwilioTranslator

    if is_twilio_start(message):
        return TwilioTranslator()
    return ExotelTranslator(url_rate)
