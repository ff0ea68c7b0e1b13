"""What placing one outbound call means, shared by everyone who places them: `voicebridge dial`, the
management API's `POST /api/calls` and the campaign runner all hand a `DialRequest` to a `Dialer`, and
learn how each attempt ended from `CallAttemptEnded` events.

No I/O here: the provider REST calls live in each provider's module (telephony/exotel.py, twilio.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

from voicebridge.telephony.events import ProviderName

# How the provider says a dialled call ended (Exotel's StatusCallback `Status`, Twilio's `CallStatus`,
# folded to one spelling). Only "completed" means somebody (or something) answered.
DialStatus = Literal["completed", "busy", "no-answer", "failed", "canceled"]
# Who answered an outbound call, by the provider's AMD or our own detector; "unknown" when neither knew.
AnsweredBy = Literal["human", "machine", "unknown"]
Direction = Literal["inbound", "outbound"]


def _no_context() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DialRequest:
    """One call to place."""

    # E.164 (`+` and 8–15 digits); validated by the dialer before anything is sent.
    to_number: str
    # The caller id shown (Exotel: the ExoPhone; Twilio: a number of the account); "": the configured one.
    from_number: str = ""
    # The call's context, exactly as an inbound call's custom parameters become it (telephony/context.py).
    context: Mapping[str, str] = field(default_factory=_no_context)
    # None: the configured default provider.
    provider: ProviderName | None = None
    # Who asked, for logs and records: "cli", "api", or "campaign:<id>".
    origin: str = "api"


@dataclass(frozen=True, slots=True)
class DialResult:
    """The provider took the request: the call is ringing (or about to)."""

    call_sid: str
    provider: ProviderName


class DialRefused(ValueError):
    """The request was refused before reaching the provider (bad number, DNC, no capacity, provider off);
    `reason` is a short label for metrics and the API's 4xx."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DialFailed(RuntimeError):
    """The provider did not take the request (unreachable, 4xx/5xx); worth retrying later or not."""

    def __init__(self, detail: str, retryable: bool) -> None:
        super().__init__(detail)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class CallAttemptEnded:
    """How one dialled call ended, told once per call sid to every listener."""

    call_sid: str
    provider: ProviderName
    status: DialStatus
    answered_by: AnsweredBy = "unknown"
    # The call record's outcome when the stream ran ("" when it never connected).
    outcome: str = ""


class Dialer(Protocol):
    """Places outbound calls through the configured providers."""

    async def dial(self, request: DialRequest) -> DialResult:
        """Place the call; raises DialRefused or DialFailed."""
        ...


AttemptListener = Callable[[CallAttemptEnded], None]


class AttemptEvents(Protocol):
    """Where listeners (a campaign runner) learn how the attempts they placed ended."""

    def subscribe(self, listener: AttemptListener) -> None:
        """Call `listener` once for every dialled call that ends, from the event loop; it must not block."""
        ...
