"""What a dialled call's stream start becomes: the call the dial request described. Kept out of
call/session.py, which only asks for it when its URL named a dial."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from voicebridge.outbound.pending import PendingDial
from voicebridge.telephony.events import Start


def outbound_start(start: Start, dial: PendingDial) -> Start:
    """`start` as the outbound call it is: our caller id calling the number dialled, with the request's
    context (ours, so trusted over anything the wire repeated) and direction "outbound"."""
    return replace(
        start,
        call_sid=start.call_sid or dial.call_sid,
        from_number=dial.caller_id or start.from_number,
        to_number=dial.request.to_number,
        context=MappingProxyType(dict(dial.request.context)),
        context_dropped=(),
        direction="outbound",
    )


def business_number(start: Start) -> str:
    """The number whose business answers: the one called, or ours when we placed the call."""
    return start.from_number if start.direction == "outbound" else start.to_number
