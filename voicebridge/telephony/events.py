"""Provider-neutral call events: what the translators produce from the wire and what the call sends back.

The call logic sees only these types, never a provider's field names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from voicebridge.telephony.context import Dropped, empty_context

# A provider's `Provider.name` ("exotel", "twilio", ...): a plain str, so that adding a provider is one new
# module under telephony/ and changes nothing shared.
ProviderName = str
AudioEncoding = Literal["pcm16", "mulaw"]


# --- inbound: provider → call -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The provider opened the stream (Exotel/Twilio `connected`)."""


@dataclass(frozen=True, slots=True)
class Start:
    """The stream's metadata. Audio that follows is PCM16 at `sample_rate` once decoded by the translator."""

    provider: ProviderName
    stream_sid: str
    call_sid: str
    account_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    sample_rate: int = 8000
    custom_parameters: dict[str, str] = field(default_factory=dict)
    # The call's context (telephony/context.py): the custom parameters the call may use, validated; and
    # what was left out of it and why, for the stream session to count and log.
    context: Mapping[str, str] = field(default_factory=empty_context)
    context_dropped: tuple[Dropped, ...] = ()
    # The audio on the wire both ways, once the stream accepts this start.
    encoding: AudioEncoding = "pcm16"
    # The rate the start message itself stated, when it differs from `sample_rate` (the one in force).
    announced_rate: int | None = None
    # One line saying why the rate in force is not what the URL or the start asked for; "" when they agree.
    rate_note: str = ""
    # "outbound" for a call the daemon placed (voicebridge/outbound/): set by the stream session from the
    # dial its URL named, never from the wire; the call then runs answering-machine detection before it
    # greets (call/answering.py).
    direction: Literal["inbound", "outbound"] = "inbound"


@dataclass(frozen=True, slots=True)
class Audio:
    """Caller audio, already decoded to PCM16LE mono at the stream's rate."""

    pcm16: bytes
    sample_rate: int


@dataclass(frozen=True, slots=True)
class Dtmf:
    """A keypad digit the caller pressed."""

    digit: str


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """The provider finished playing (or dropped) the audio before the mark we sent with this name."""

    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The provider ended the stream."""

    reason: str = ""


InboundEvent = Connected | Start | Audio | Dtmf | MarkEcho | Stop


class ProtocolViolation(ValueError):
    """A message the translator could not accept; `kind` is a short label for metrics."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class UnknownEvent(ProtocolViolation):
    """A well-formed message whose event type we do not handle; ignored and counted."""
