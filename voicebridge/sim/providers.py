"""The providers' side of the media stream, as the simulator and the tests play it: the messages Exotel's
and Twilio's platforms send, and parsing what the daemon sends back. Pure: strings in, strings out.

The daemon's side is each provider's translator (telephony/exotel.py, telephony/twilio.py);
tests/unit/test_providers.py checks that the two round-trip.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

from voicebridge.audio.codecs import b64decode_payload, b64encode_payload, pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.sim.messages import OutboundMessage
from voicebridge.telephony.twilio import TWILIO_RATE
from voicebridge.telephony.wire import event_name, text


class ProviderCaller:
    """What both providers' sides share: numbered messages carrying the stream sid, paced media chunks with
    timestamps, marks, and the decoding of the daemon's messages. A subclass names its keys and encoding
    and writes its own `start`, `dtmf` and `stop`."""

    # snake_case (Exotel) or camelCase (Twilio) keys
    sid_key: ClassVar[str]
    sequence_key: ClassVar[str]
    sample_rate: int

    def __init__(self, call_sid: str, stream_sid: str, account_sid: str) -> None:
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self._sequence = 0
        self._chunk = 0
        self._timestamp_ms = 0

    def _next(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def _message(self, event: str, **sections: Any) -> str:
        """One numbered message of this stream: event, sequence number, stream sid, then `sections`."""
        return json.dumps(
            {"event": event, self.sequence_key: self._next(), self.sid_key: self.stream_sid, **sections}
        )

    def media(self, pcm16: bytes) -> str:
        self._chunk += 1
        media = {
            **self._media_track(),
            "chunk": str(self._chunk),
            "timestamp": str(self._timestamp_ms),
            "payload": b64encode_payload(self._wire_audio(pcm16)),
        }
        message = self._message("media", media=media)
        self._timestamp_ms += len(pcm16) * 1000 // (2 * self.sample_rate)
        return message

    def mark(self, name: str) -> str:
        return self._message("mark", mark={"name": name})

    def connected(self) -> str:
        """The message that opens the socket, before `start`."""
        raise NotImplementedError

    def start(self) -> str:
        """The stream's `start`: its sids, numbers and media format."""
        raise NotImplementedError

    def dtmf(self, key: str) -> str:
        """A key the caller pressed."""
        raise NotImplementedError

    def stop(self, reason: str = "callended") -> str:
        """The caller hung up."""
        raise NotImplementedError

    def parse_outbound(self, raw: str) -> OutboundMessage:
        """Decode a message the daemon sent; media comes back as PCM16 at the stream's rate."""
        message = json.loads(raw)
        name = event_name(message)
        sid = text(message, self.sid_key, "stream_sid", "streamSid")
        if name == "media":
            payload = b64decode_payload(message["media"]["payload"])
            pcm16 = self._pcm_from_wire(payload)
            return OutboundMessage("media", pcm16, raw_payload_bytes=len(payload), stream_sid=sid)
        if name == "mark":
            return OutboundMessage("mark", mark_name=str(message["mark"]["name"]), stream_sid=sid)
        if name == "clear":
            return OutboundMessage("clear", stream_sid=sid)
        return OutboundMessage("other", stream_sid=sid)

    def _media_track(self) -> dict[str, str]:
        return {}

    def _wire_audio(self, pcm16: bytes) -> bytes:
        return pcm16

    def _pcm_from_wire(self, payload: bytes) -> bytes:
        return payload


class ExotelCaller(ProviderCaller):
    """Exotel's side of the stream: the messages its platform sends, and parsing what we send back.
    Exotel payloads are PCM16 at the stream's rate both ways."""

    sid_key = "stream_sid"
    sequence_key = "sequence_number"

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
        super().__init__(call_sid, stream_sid, account_sid)
        self.from_number = from_number
        self.to_number = to_number
        self.sample_rate = sample_rate
        self.custom_parameters = custom_parameters or {}

    def connected(self) -> str:
        return json.dumps({"event": "connected"})

    def start(self) -> str:
        return self._message(
            "start",
            start={
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
        )

    def dtmf(self, key: str) -> str:
        return self._message("dtmf", dtmf={"digit": key, "duration": "100"})

    def stop(self, reason: str = "callended") -> str:
        return self._message(
            "stop", stop={"call_sid": self.call_sid, "account_sid": self.account_sid, "reason": reason}
        )


class TwilioCaller(ProviderCaller):
    """Twilio's side of the stream: what Media Streams sends (μ-law at 8 kHz), and parsing what we send
    back (μ-law, returned as PCM16)."""

    sid_key = "streamSid"
    sequence_key = "sequenceNumber"
    sample_rate = TWILIO_RATE

    def __init__(
        self,
        call_sid: str,
        stream_sid: str,
        from_number: str = "+15551230000",
        to_number: str = "+15557650000",
        account_sid: str = "ACsimulated",
    ) -> None:
        super().__init__(call_sid, stream_sid, account_sid)
        self.custom_parameters = {"From": from_number, "To": to_number}

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        return self._message(
            "start",
            start={
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": TWILIO_RATE, "channels": 1},
            },
        )

    def dtmf(self, key: str) -> str:
        return self._message("dtmf", dtmf={"track": "inbound_track", "digit": key})

    def stop(self, reason: str = "callended") -> str:
        # Twilio's stop carries no reason; the argument keeps the caller interface uniform.
        return self._message("stop", stop={"accountSid": self.account_sid, "callSid": self.call_sid})

    def _media_track(self) -> dict[str, str]:
        return {"track": "inbound"}

    def _wire_audio(self, pcm16: bytes) -> bytes:
        return pcm16_to_ulaw(pcm16)

    def _pcm_from_wire(self, payload: bytes) -> bytes:
        return ulaw_to_pcm16(payload)


class SimulatedProvider(NamedTuple):
    """What the simulator knows of one provider: the stream rates it offers (the first is its default) and
    how to make its side of one stream."""

    rates: tuple[int, ...]
    # (call_sid, stream_sid, from_number, to_number, sample_rate) -> its caller; a provider with one rate
    # ignores sample_rate, and the caller's own `sample_rate` is what the stream uses.
    caller: Callable[[str, str, str, str, int], ProviderCaller]


# The providers the simulator (SimulatedCaller, `voicebridge simulate`) can play, by provider name.
SIM_PROVIDERS: dict[str, SimulatedProvider] = {
    "exotel": SimulatedProvider(
        (8000, 16000, 24000),
        lambda call_sid, stream_sid, from_number, to_number, rate: ExotelCaller(
            call_sid, stream_sid, from_number, to_number, sample_rate=rate
        ),
    ),
    "twilio": SimulatedProvider(
        (TWILIO_RATE,),
        lambda call_sid, stream_sid, from_number, to_number, rate: TwilioCaller(
            call_sid, stream_sid, from_number=from_number, to_number=to_number
        ),
    ),
}
