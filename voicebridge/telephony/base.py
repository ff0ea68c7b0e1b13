"""What a telephony provider is: the `Provider` Protocol each provider module implements, the `Translator`
Protocol of one stream's wire translation, and `StreamTranslator`, the part every translator shares.

A provider is one module (telephony/exotel.py, telephony/twilio.py): its pure translator, its webhook
handlers and routes, its webhook auth check and its call control. `providers.PROVIDERS` lists them;
docs/adding-a-provider.md says how to add one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from voicebridge.audio.codecs import b64encode_payload
from voicebridge.telephony.events import (
    Audio,
    Connected,
    Dtmf,
    InboundEvent,
    MarkEcho,
    ProviderName,
    Start,
    Stop,
    UnknownEvent,
)
from voicebridge.telephony.wire import MAX_MARK_NAME_CHARS, digit, event_name, section, text

if TYPE_CHECKING:
    from aiohttp import web

    from voicebridge.config.schema import Settings


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


class CallControl(Protocol):
    """What a call may ask of its provider beyond the stream (providers.TelephonyControl in the daemon)."""

    async def hang_up(self, start: Start) -> bool:
        """Make sure the phone call itself ends, not only our stream; True when the provider confirmed."""
        ...

    async def transfer(self, start: Start, number: str) -> bool:
        """Point the phone call at a human; True when the provider took it."""
        ...


class Provider(Protocol):
    """One telephony provider, as the daemon uses it. Everything provider-specific is behind these members:
    the door (server/access.py), the stream endpoint and the call see only this and the events."""

    @property
    def name(self) -> ProviderName:
        """Its config section, its webhook path prefix `/webhooks/<name>/`, `Start.provider` and the
        metrics label of its door."""
        ...

    def enabled(self, settings: Settings) -> bool:
        """Whether its config section enables it; a disabled provider has no routes and no streams."""
        ...

    def claims_start(self, message: dict[str, Any]) -> bool:
        """Whether this decoded `start` message is in this provider's shape."""
        ...

    def translator(self, url_rate: int | None, url_parameters: Mapping[str, str] | None = None) -> Translator:
        """A fresh translator for one stream; `url_rate` is the stream URL's `sample-rate`, None if absent,
        and `url_parameters` its query (one value per name), which may carry the call's context."""
        ...

    def add_routes(self, app: web.Application) -> None:
        """Register its webhook routes, all under `/webhooks/<name>/` (called only when enabled)."""
        ...

    async def check_webhook(self, request: web.Request, settings: Settings, address: str) -> None:
        """Raise `AuthFailure` unless the webhook request carries this provider's configured credentials;
        `address` is the client address after trusted proxies."""
        ...

    def check_stream(self, request: web.Request, settings: Settings, address: str) -> None:
        """Raise `AuthFailure` unless a stream upgrade without a per-call token carries this provider's
        credentials (a static stream URL); a provider whose auth cannot cover streams always raises."""
        ...

    async def hang_up(self, start: Start, settings: Settings) -> bool:
        """Make sure the phone call itself ends, not only our stream; True when the provider confirmed."""
        ...

    async def transfer(self, start: Start, number: str, settings: Settings) -> bool:
        """Point the phone call at a human; True when the provider took it."""
        ...


class StreamTranslator:
    """The event dispatch and outbound frames every provider's translator shares. A provider's subclass
    reads its `start`, `media` and `stop`, names its DTMF fields and the key its stream sid goes under, and
    says how PCM16 goes on its wire."""

    provider: ProviderName
    sample_rate: int
    # The key of the stream sid in outbound frames: `stream_sid` (Exotel) or `streamSid` (Twilio).
    sid_key: ClassVar[str]
    dtmf_fields: ClassVar[tuple[str, ...]] = ("digit",)

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
            return Dtmf(digit(text(section(message, "dtmf"), *self.dtmf_fields)))
        if name == "mark":
            return MarkEcho(text(section(message, "mark"), "name", limit=MAX_MARK_NAME_CHARS))
        if name == "stop":
            return self._stop(message)
        raise UnknownEvent("unknown_event", repr(name or message.get("event"))[:60])

    def media(self, pcm16: bytes) -> str:
        """An outbound media message: PCM16 at the stream's rate, in the stream's wire encoding."""
        payload = b64encode_payload(self._wire_audio(pcm16))
        return json.dumps({"event": "media", self.sid_key: self.stream_sid, "media": {"payload": payload}})

    def mark(self, name: str) -> str:
        """An outbound mark, echoed by the provider when the audio before it has played (or was cleared)."""
        return json.dumps({"event": "mark", self.sid_key: self.stream_sid, "mark": {"name": name}})

    def clear(self) -> str:
        """Drop the audio the provider has queued (barge-in)."""
        return json.dumps({"event": "clear", self.sid_key: self.stream_sid})

    def _start(self, message: dict[str, Any]) -> Start:
        raise NotImplementedError

    def _media(self, media: dict[str, Any]) -> Audio:
        raise NotImplementedError

    def _stop(self, message: dict[str, Any]) -> Stop:
        raise NotImplementedError

    def _wire_audio(self, pcm16: bytes) -> bytes:
        raise NotImplementedError
