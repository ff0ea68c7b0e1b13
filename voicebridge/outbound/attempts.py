"""How dialled calls ended, told once per call sid to every subscriber (the `AttemptEvents` Protocol of
outbound/dialer.py): fed by the providers' status callbacks and by a dialled stream's teardown, whichever
comes first; the other is then a repeat and ignored."""

from __future__ import annotations

import logging
from collections import OrderedDict

from voicebridge.outbound.dialer import AnsweredBy, AttemptListener, CallAttemptEnded

logger = logging.getLogger("voicebridge.outbound")

# Ended sids remembered to drop repeats (Exotel retries its callback up to twice; the stream ends too).
REMEMBERED_ENDS = 10_000


class AttemptTracker:
    """The daemon's AttemptEvents: subscribers, and the sids already told."""

    def __init__(self) -> None:
        self._listeners: list[AttemptListener] = []
        self._ended: OrderedDict[str, None] = OrderedDict()
        # Calls we placed, not yet ended -> who answered, as far as the provider said.
        self._placed: OrderedDict[str, AnsweredBy] = OrderedDict()

    def started(self, call_sid: str) -> None:
        """A call we placed: its callbacks are ours to tell."""
        self._placed[call_sid] = "unknown"
        while len(self._placed) > REMEMBERED_ENDS:
            self._placed.popitem(last=False)

    def placed(self, call_sid: str) -> bool:
        return call_sid in self._placed

    def answered(self, call_sid: str, who: AnsweredBy) -> None:
        """The provider's AMD said who answered (Twilio's AnsweredBy)."""
        if call_sid in self._placed:
            self._placed[call_sid] = who

    def answered_by(self, call_sid: str) -> AnsweredBy:
        return self._placed.get(call_sid, "unknown")

    def subscribe(self, listener: AttemptListener) -> None:
        self._listeners.append(listener)

    def ended(self, event: CallAttemptEnded) -> bool:
        """Tell every subscriber, unless this call sid was already told; True when it was told now."""
        if event.call_sid in self._ended:
            return False
        self._ended[event.call_sid] = None
        self._placed.pop(event.call_sid, None)
        while len(self._ended) > REMEMBERED_ENDS:
            self._ended.popitem(last=False)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one broken listener must not keep the others from hearing
                logger.exception("attempt listener failed for %s", event.call_sid)
        return True
