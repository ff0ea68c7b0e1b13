"""Twilio Media Streams: camelCase JSON, base64 μ-law at 8 kHz (docs/twilio-stream.md).

`TwilioTranslator` is the daemon's side; `TwilioCaller` speaks Twilio's side for the simulator and tests.
"""

from __future__ import annotations

import json
from typing import Any

from voicebridge.audio.chunker import DEFAULT_CHUNK_MS
from voicebridge.audio.codecs import b64decode_payload, b64encode_payload, pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.sim.messages import OutboundMessage
from voicebridge.telephony.events import (
    Audio,
    Connected,
    Dtmf,
    InboundEvent,
    MarkEcho,
    ProtocolViolation,
    ProviderName,
    Start,
    Stop,
    UnknownEvent,
)
from voicebridge.telephony.sids import MAX_NUMBER_CHARS
from voicebridge.telephony.translators import event_name
from voicebridge.telephony.wire import (
    MAX_MARK_NAME_CHARS,
    digit,
    section,
    sid,
    string_map,
    text,
)

TWILIO_RATE = 8000


class TwilioTranslator:
    """Twilio wire JSON ⇄ internal events for one stream."""

    provider: ProviderName = "twilio"
    sample_rate = TWILIO_RATE
    # Twilio states no minimum chunk; 200 ms keeps what a barge-in `clear` discards small.
    outbound_chunk_ms = DEFAULT_CHUNK_MS

    def __init__(self) -> None:
        self.stream_sid = ""

    def parse(self, message: dict[str, Any]) -> InboundEvent:
        """Translate one decoded message; raises ProtocolViolation (UnknownEvent for events we ignore)."""
        name = event_name(message)
        if name == "media":
            return self._media(section(message, "media"))
        if name == "connected":
            return Connected()
        if name == "start":
            return self._start(message)
        if name == "dtmf":
            return Dtmf(digit(text(section(message, "dtmf"), "digit")))
        if name == "mark":
            return MarkEcho(text(section(message, "mark"), "name", limit=MAX_MARK_NAME_CHARS))
        if name == "stop":
            return Stop("stopped")
        raise UnknownEvent("unknown_event", repr(name or message.get("event"))[:60])

    def accept(self, start: Start) -> None:
        """From now on: this start's stream sid in every outbound frame."""
        self.stream_sid = start.stream_sid

    def _start(self, message: dict[str, Any]) -> Start:
        # Locals only: a start the stream refuses must leave this stream as it was.
        body = section(message, "start")
        media_format = body.get("mediaFormat") if isinstance(body.get("mediaFormat"), dict) else {}
        encoding = text(media_format, "encoding", default="audio/x-mulaw").lower()
        if "mulaw" not in encoding:
            raise ProtocolViolation("bad_audio", f"unsupported Twilio encoding {encoding[:40]!r}")
        rate = text(media_format, "sampleRate", default=str(TWILIO_RATE))
        if rate != str(TWILIO_RATE):
            raise ProtocolViolation("bad_sample_rate", f"Twilio streams are 8000 Hz, got {rate[:20]!r}")
        stream_sid = sid(message, "bad_stream_sid", "streamSid", "stream_sid") or sid(
            body, "bad_stream_sid", "streamSid", "stream_sid"
        )
        call_sid = sid(body, "bad_call_sid", "callSid", "call_sid")
        if not call_sid and not stream_sid:
            raise ProtocolViolation("missing_field", "start has neither callSid nor streamSid")
        parameters = string_map(body.get("customParameters"))
        from_number = parameters.get("From", parameters.get("from", ""))
        to_number = parameters.get("To", parameters.get("to", ""))
        if len(from_number) > MAX_NUMBER_CHARS or len(to_number) > MAX_NUMBER_CHARS:
            raise ProtocolViolation("field_too_long", "a From/To parameter longer than a phone number")
        return Start(
            provider="twilio",
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=sid(body, "bad_account_sid", "accountSid", "account_sid"),
            # Twilio's start has no numbers; our TwiML passes them as <Parameter>s.
            from_number=from_number,
            to_number=to_number,
            sample_rate=TWILIO_RATE,
            custom_parameters=parameters,
            encoding="mulaw",
        )

    def _media(self, media: dict[str, Any]) -> Audio:
        track = text(media, "track", default="inbound")
        if track not in ("inbound", "inbound_track"):
            raise UnknownEvent("ignored_track", f"media on track {track!r}")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise ProtocolViolation("missing_field", "media.payload missing")
        try:
            audio = b64decode_payload(payload)
        except ValueError as exc:
            raise ProtocolViolation("bad_base64", str(exc)[:120]) from None
        if not audio:
            raise ProtocolViolation("bad_audio", "empty payload")
        return Audio(ulaw_to_pcm16(audio), TWILIO_RATE)

    def media(self, pcm16: bytes) -> str:
        """An outbound media message: PCM16 at 8 kHz, sent as μ-law."""
        payload = b64encode_payload(pcm16_to_ulaw(pcm16))
        return json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})

    def mark(self, name: str) -> str:
        """An outbound mark, echoed when played (or dropped by a clear)."""
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> str:
        """Drop the audio Twilio has queued (barge-in)."""
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})


class TwilioCaller:
    """Twilio's side of the stream: what Media Streams sends, and parsing what we send back."""

    sample_rate = TWILIO_RATE

    def __init__(
        self,
        call_sid: str,
        stream_sid: str,
        from_number: str = "+15551230000",
        to_number: str = "+15557650000",
        account_sid: str = "ACsimulated",
    ) -> None:
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.custom_parameters = {"From": from_number, "To": to_number}
        self._sequence = 0
        self._chunk = 0
        self._timestamp_ms = 0

    def _next(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": TWILIO_RATE, "channels": 1},
                },
            }
        )

    def media(self, pcm16: bytes) -> str:
        self._chunk += 1
        message = {
            "event": "media",
            "sequenceNumber": self._next(),
            "streamSid": self.stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(self._chunk),
                "timestamp": str(self._timestamp_ms),
                "payload": b64encode_payload(pcm16_to_ulaw(pcm16)),
            },
        }
        self._timestamp_ms += len(pcm16) * 1000 // (2 * TWILIO_RATE)
        return json.dumps(message)

    def dtmf(self, key: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": key},
            }
        )

    def mark(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self, reason: str = "callended") -> str:
        # Twilio's stop carries no reason; the argument keeps the caller interface uniform.
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    def parse_outbound(self, raw: str) -> OutboundMessage:
        """Decode a message the daemon sent; Twilio payloads are μ-law, returned as PCM16."""
        message = json.loads(raw)
        name = event_name(message)
        sid = text(message, "streamSid", "stream_sid")
        if name == "media":
            payload = b64decode_payload(message["media"]["payload"])
            return OutboundMessage(
                "media", ulaw_to_pcm16(payload), raw_payload_bytes=len(payload), stream_sid=sid
            )
        if name == "mark":
            return OutboundMessage("mark", mark_name=str(message["mark"]["name"]), stream_sid=sid)
        if name == "clear":
            return OutboundMessage("clear", stream_sid=sid)
        return OutboundMessage("other", stream_sid=sid)
