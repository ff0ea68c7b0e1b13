"""Until the real dialler is wired (the outbound lane fills server.keys.DIALER and ATTEMPT_EVENTS), the
daemon's campaigns use these: every dial is refused with DialRefused("no_dialer"), which is no attempt,
so a campaign started now waits and nothing pretends to call."""

from __future__ import annotations

from voicebridge.outbound.dialer import AttemptListener, DialRefused, DialRequest, DialResult


class NoDialer:
    async def dial(self, request: DialRequest) -> DialResult:
        raise DialRefused("no_dialer", "outbound dialling is not configured in this daemon")


class NoAttemptEvents:
    def subscribe(self, listener: AttemptListener) -> None:
        """No call is ever placed, so none ever ends."""
