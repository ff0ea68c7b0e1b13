"""Exotel Voicebot applet stream: snake_case JSON, base64 PCM16LE at 8/16/24 kHz or μ-law at 8 kHz
(docs/exotel-stream.md).

`ExotelTranslator` is the daemon's side; `ExotelCaller` speaks Exotel's side for the simulator and tests.
Both are pure: strings in, strings or events out.
"""

from __future__ import annotations

import json
import re
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
from voicebridge.telephony.wire import sample_rate as parse_rate

EXOTEL_RATES = (8000, 16000, 24000)


class ExotelTranslator:
    """Exotel wire JSON ⇄ internal events for one stream.

    The rate: Exotel documents the Voicebot URL's `sample-rate` query parameter (8000 when absent) and the
    `start` message's `media_format`, but no rule for when they disagree. Our choice: an explicit URL rate
    wins (it is what the operator configured) and a disagreeing start is reported (`Start.rate_note`);
    without one, the start's rate applies (an applet-level media format, from `sample_rate` or a `rate=`
    in the encoding), else 8000. μ-law is 8000 Hz whatever the URL says (docs/exotel-stream.md).
    """

    provider: ProviderName = "exotel"

    def __init__(self, url_rate: int | None = None) -> None:
        self._url_rate = url_rate
        self.sample_rate = url_rate or 8000
        self.stream_sid = ""
        self._mulaw = False

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
            return Dtmf(digit(text(section(message, "dtmf"), "digit", "digits")))
        if name == "mark":
            return MarkEcho(text(section(message, "mark"), "name", limit=MAX_MARK_NAME_CHARS))
        if name == "stop":
            stop = message.get("stop")
            return Stop(text(stop, "reason") if isinstance(stop, dict) else "")
        raise UnknownEvent("unknown_event", repr(name or message.get("event"))[:60])

    @property
    def outbound_chunk_ms(self) -> int:
        """Exotel wants chunks of at least 3,200 bytes (docs/exotel-stream.md): 200 ms of PCM16 at 8 kHz
        or more, but 400 ms of μ-law, whose samples are one byte."""
        return 2 * DEFAULT_CHUNK_MS if self._mulaw else DEFAULT_CHUNK_MS

    def accept(self, start: Start) -> None:
        """From now on: this start's stream sid in every outbound frame, its encoding and rate both ways."""
        self.stream_sid = start.stream_sid
        self.sample_rate = start.sample_rate
        self._mulaw = start.encoding == "mulaw"

    def _start(self, message: dict[str, Any]) -> Start:
        # Locals only: a start the stream refuses (a duplicate, a bad sid) must leave this stream as it was.
        body = section(message, "start")
        media_format = body.get("media_format") or body.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            media_format = {}
        encoding = text(media_format, "encoding")
        mulaw = names_mulaw(encoding)
        raw_rate = media_format.get("sample_rate", media_format.get("sampleRate"))
        if raw_rate in (None, ""):
            raw_rate = rate_in_encoding(encoding)  # `audio/L16;rate=16000`, the applet's media format
        stated = parse_rate(raw_rate, 0, EXOTEL_RATES) or None
        if mulaw and stated not in (None, 8000):
            raise ProtocolViolation("bad_sample_rate", "μ-law audio must be 8000 Hz")
        rate = 8000 if mulaw else (self._url_rate or stated or 8000)
        announced = stated if stated is not None and stated != rate else None
        note = ""
        if mulaw and self._url_rate not in (None, 8000):
            note = f"the stream URL asks sample-rate={self._url_rate} but start names μ-law, which is 8000 Hz"
        elif announced is not None:
            asks = f"asks sample-rate={self._url_rate}" if self._url_rate else "has no sample-rate"
            note = f"the stream URL {asks}, start says {announced}"
        stream_sid = sid(message, "bad_stream_sid", "stream_sid", "streamSid") or sid(
            body, "bad_stream_sid", "stream_sid", "streamSid"
        )
        call_sid = sid(body, "bad_call_sid", "call_sid", "callSid", "CallSid")
        if not call_sid and not stream_sid:
            raise ProtocolViolation("missing_field", "start has neither call_sid nor stream_sid")
        return Start(
            provider="exotel",
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=sid(body, "bad_account_sid", "account_sid", "accountSid"),
            from_number=text(body, "from", "From", "call_from", limit=MAX_NUMBER_CHARS),
            to_number=text(body, "to", "To", "call_to", limit=MAX_NUMBER_CHARS),
            sample_rate=rate,
            custom_parameters=string_map(body.get("custom_parameters") or body.get("customParameters")),
            encoding="mulaw" if mulaw else "pcm16",
            announced_rate=announced,
            rate_note=f"{note}; using {rate}" if note else "",
        )

    def _media(self, media: dict[str, Any]) -> Audio:
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise ProtocolViolation("missing_field", "media.payload missing")
        try:
            audio = b64decode_payload(payload)
        except ValueError as exc:
            raise ProtocolViolation("bad_base64", str(exc)[:120]) from None
        if self._mulaw:
            audio = ulaw_to_pcm16(audio)
        if not audio or len(audio) % 2:
            raise ProtocolViolation("bad_audio", f"PCM16 payload of {len(audio)} bytes")
        return Audio(audio, self.sample_rate)

    def media(self, pcm16: bytes) -> str:
        """An outbound media message at the stream's rate, in the stream's encoding (PCM16LE or μ-law)."""
        audio = pcm16_to_ulaw(pcm16) if self._mulaw else pcm16
        return json.dumps(
            {"event": "media", "stream_sid": self.stream_sid, "media": {"payload": b64encode_payload(audio)}}
        )

    def mark(self, name: str) -> str:
        """An outbound mark, echoed by Exotel when the audio before it has played."""
        return json.dumps({"event": "mark", "stream_sid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> str:
        """Drop the audio Exotel has queued (barge-in)."""
        return json.dumps({"event": "clear", "stream_sid": self.stream_sid})


def names_mulaw(encoding: str) -> bool:
    """Whether a `media_format.encoding` names G.711 μ-law, however spelled: `audio/x-mulaw`, `ulaw`,
    `g711_ulaw`, `PCMU`, `μ-law`."""
    compact = re.sub(r"[^a-z0-9]", "", encoding.lower().replace("μ", "u").replace("µ", "u"))
    return "ulaw" in compact or "pcmu" in compact


def rate_in_encoding(encoding: str) -> str | None:
    """The `rate=` parameter of a MIME-style encoding (`audio/L16;rate=16000`), None when it has none."""
    found = re.search(r";\s*rate\s*=\s*([^;\s]{1,16})", encoding, flags=re.IGNORECASE)
    return found.group(1) if found else None


class ExotelCaller:
    """Exotel's side of the stream: the messages its platform sends, and parsing what we send back."""

    def __init__(
        self,
        call_sid: str,
        stream_sid: str,
        from_number: str = "+919876543210",
        to_number: str = "+918047491899",
        sample_rate: int = 8000,
        account_sid: str = "ACsimulated",
        custom_parameters: dict[str, str] | None = None,
    ) -> None:
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.from_number = from_number
        self.to_number = to_number
        self.sample_rate = sample_rate
        self.account_sid = account_sid
        self.custom_parameters = custom_parameters or {}
        self._sequence = 0
        self._chunk = 0
        self._timestamp_ms = 0

    def _next(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def connected(self) -> str:
        return json.dumps({"event": "connected"})

    def start(self) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequence_number": self._next(),
                "stream_sid": self.stream_sid,
                "start": {
                    "stream_sid": self.stream_sid,
                    "call_sid": self.call_sid,
                    "account_sid": self.account_sid,
                    "from": self.from_number,
                    "to": self.to_number,
                    "custom_parameters": self.custom_parameters,
                    "media_format": {
                        "encoding": "audio/x-raw",
                        "sample_rate": str(self.sample_rate),
                        "bit_rate": "16",
                    },
                },
            }
        )

    def media(self, pcm16: bytes) -> str:
        self._chunk += 1
        message = {
            "event": "media",
            "sequence_number": self._next(),
            "stream_sid": self.stream_sid,
            "media": {
                "chunk": str(self._chunk),
                "timestamp": str(self._timestamp_ms),
                "payload": b64encode_payload(pcm16),
            },
        }
        self._timestamp_ms += len(pcm16) * 1000 // (2 * self.sample_rate)
        return json.dumps(message)

    def dtmf(self, key: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequence_number": self._next(),
                "stream_sid": self.stream_sid,
                "dtmf": {"digit": key, "duration": "100"},
            }
        )

    def mark(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequence_number": self._next(),
                "stream_sid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self, reason: str = "callended") -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequence_number": self._next(),
                "stream_sid": self.stream_sid,
                "stop": {"call_sid": self.call_sid, "account_sid": self.account_sid, "reason": reason},
            }
        )

    def parse_outbound(self, raw: str) -> OutboundMessage:
        """Decode a message the daemon sent; Exotel payloads are PCM16 at the stream's rate."""
        message = json.loads(raw)
        name = event_name(message)
        sid = text(message, "stream_sid", "streamSid")
        if name == "media":
            payload = b64decode_payload(message["media"]["payload"])
            return OutboundMessage("media", payload, raw_payload_bytes=len(payload), stream_sid=sid)
        if name == "mark":
            return OutboundMessage("mark", mark_name=str(message["mark"]["name"]), stream_sid=sid)
        if name == "clear":
            return OutboundMessage("clear", stream_sid=sid)
        return OutboundMessage("other", stream_sid=sid)
