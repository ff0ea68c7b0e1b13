"""A dialled call's end, from whichever says it first: the provider's status callback (busy, no-answer,
failed, or completed) or the stream's teardown. Both feed the AttemptTracker, which tells each call once."""

from __future__ import annotations

from aiohttp import web

from voicebridge.call.answering import twilio_answered_by
from voicebridge.outbound.dialer import AnsweredBy, CallAttemptEnded, DialStatus
from voicebridge.server.keys import ATTEMPTS, DIALER, REGISTRY
from voicebridge.telephony.events import ProviderName

# The providers' terminal statuses (Exotel's Status, Twilio's CallStatus), folded to one spelling.
TERMINAL: dict[str, DialStatus] = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "canceled",
}


# A call record's answered_by, as the attempt's.
ANSWERS: dict[str, AnsweredBy] = {"human": "human", "machine": "machine", "unknown": "unknown"}


def note_status(app: web.Application, provider: ProviderName, call_sid: str, fields: dict[str, str]) -> None:
    """A status callback of a call we may have dialled: a terminal one ends its attempt, unless its stream
    is still live (then the stream's teardown tells it, with the call's outcome)."""
    tracker = app[ATTEMPTS]
    if raw_answer := fields.get("AnsweredBy", ""):
        verdict = twilio_answered_by(raw_answer)
        tracker.answered(call_sid, verdict)
        # A live call's own detector gives way to the provider's verdict (call/answering.py).
        app[REGISTRY].provider_answered(call_sid, verdict)
    status = TERMINAL.get(fields.get("Status", fields.get("CallStatus", "")).strip().lower())
    if status is None:
        return
    pending = app[DIALER].pending
    dial = pending.by_call_sid(call_sid)
    if dial is None and not tracker.placed(call_sid):
        return  # an inbound call's callback: no attempt of ours
    if any(live.get("call_sid") == call_sid for live in app[REGISTRY].list_active()):
        return
    if dial is not None:
        pending.take(dial.dial_id)  # it will never stream now
    tracker.ended(CallAttemptEnded(call_sid, provider, status, tracker.answered_by(call_sid)))


def note_stream_end(app: web.Application, provider: ProviderName, call_sid: str) -> None:
    """A dialled call's stream ended: the attempt is over, with the call record's outcome."""
    tracker = app[ATTEMPTS]
    record = app[REGISTRY].finished(call_sid)
    outcome = record.outcome if record is not None else ""
    # The call's own verdict (our detector, or the provider's that replaced it) before a callback's.
    found = record.answered_by if record is not None else ""
    answered = ANSWERS.get(found) or tracker.answered_by(call_sid)
    tracker.ended(CallAttemptEnded(call_sid, provider, "completed", answered, outcome))
