"""Dials placed and not yet streaming. The provider's CallSid is only known once the create request
returns, so the stream URL we hand the provider carries a token issued for our own dial id; the upgrade
presenting it is matched here to the request (to, from, context, origin) and admitted once.

The tokens are the daemon's ordinary stream tokens (telephony/stream_tokens.py: HMAC, expiry, single
use), keyed by the dial id instead of a call sid.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace

from voicebridge.outbound.dialer import DialRequest
from voicebridge.telephony.auth import AuthFailure
from voicebridge.telephony.events import ProviderName
from voicebridge.telephony.stream_tokens import StreamTokens

# "DL" + 24 hex: the providers' sid shape (telephony/sids.py), so it fits the /ws/stream/{sid}/{token} route.
DIAL_ID_PREFIX = "DL"


@dataclass(frozen=True, slots=True)
class PendingDial:
    """One placed call waiting for its stream."""

    dial_id: str
    request: DialRequest
    provider: ProviderName
    expires: float
    # The provider's sid, once its create request answered ("" until then).
    call_sid: str = ""
    # The caller id the provider shows (the request's, else the provider's configured one).
    caller_id: str = ""


def is_dial_id(value: str) -> bool:
    """True for a sid that names one of our dials rather than a provider's call."""
    return value.startswith(DIAL_ID_PREFIX) and len(value) == len(DIAL_ID_PREFIX) + 24


class PendingDials:
    """dial id -> PendingDial, each until its stream is admitted or its token expires."""

    def __init__(self, tokens: StreamTokens, ttl_s: float) -> None:
        self._tokens = tokens
        self._ttl = ttl_s
        self._pending: dict[str, PendingDial] = {}

    def open(
        self, request: DialRequest, provider: ProviderName, now: float | None = None, caller_id: str = ""
    ) -> tuple[PendingDial, str]:
        """A new dial and the token its stream URL carries."""
        moment = now if now is not None else time.time()
        self._forget_expired(moment)
        dial_id = f"{DIAL_ID_PREFIX}{secrets.token_hex(12)}"
        dial = PendingDial(dial_id, request, provider, moment + self._ttl, caller_id=caller_id)
        self._pending[dial.dial_id] = dial
        return dial, self._tokens.issue(dial.dial_id, now=moment)

    def placed(self, dial_id: str, call_sid: str) -> None:
        """The provider took the dial and named its call."""
        if (dial := self._pending.get(dial_id)) is not None:
            self._pending[dial_id] = replace(dial, call_sid=call_sid)

    def cancel(self, dial_id: str) -> None:
        """The provider refused the dial: no stream will come."""
        self._pending.pop(dial_id, None)

    def check(self, dial_id: str, token: str, now: float | None = None) -> PendingDial:
        """The dial a stream upgrade's token is for, without spending it; AuthFailure when forged, expired,
        used or for no open dial."""
        moment = now if now is not None else time.time()
        self._tokens.check_unused(dial_id, token, moment)
        self._forget_expired(moment)
        dial = self._pending.get(dial_id)
        if dial is None:
            raise AuthFailure("no open dial for this stream")
        return dial

    def admit(self, dial_id: str, token: str, now: float | None = None) -> PendingDial:
        """`check`, then spend the token and close the dial: one stream per dial. No await in here, so of
        two upgrades racing with one token exactly one is admitted."""
        dial = self.check(dial_id, token, now)
        self._tokens.redeem(dial_id, token, now)
        del self._pending[dial_id]
        return dial

    def take(self, dial_id: str, now: float | None = None) -> PendingDial | None:
        """Close the dial whose stream was admitted by the access door (which spent its token); None when
        there is no such open dial (never placed, expired, or taken already)."""
        self._forget_expired(now if now is not None else time.time())
        return self._pending.pop(dial_id, None)

    def by_call_sid(self, call_sid: str) -> PendingDial | None:
        """The open dial the provider named `call_sid` (its status callback before any stream)."""
        return next((d for d in self._pending.values() if d.call_sid == call_sid), None)

    def __len__(self) -> int:
        return len(self._pending)

    def _forget_expired(self, moment: float) -> None:
        for dial_id in [d.dial_id for d in self._pending.values() if d.expires < moment]:
            del self._pending[dial_id]
