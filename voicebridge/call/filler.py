"""No dead air while the backend thinks: a turn whose backend has yielded no text `backend.filler_after_ms`
after the turn ended hears `prompts.filler` (pre-rendered, from the phrase cache) once, then the reply,
queued behind it and never cut by it.

The filler opens the reply's bot line but is not part of it: the backend's history never sees it as the
bot's words (the line holds only the reply), and the record notes it on the line as `filler`. Its audio
is the reply's lead-in, so what a barge-in leaves as heard is counted from the end of the filler.

A guess (a reply started in the caller's pause) waits for its turn to be confirmed before its clock
starts: a turn the caller speaks on from never plays a filler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from voicebridge.call.basics import CallBasics
from voicebridge.call.pacer import OutboundPacer
from voicebridge.call.reply_state import Reply
from voicebridge.call.services import CallServices


class Filler:
    """Arms the filler of each reply of one call."""

    def __init__(
        self,
        services: CallServices,
        basics: CallBasics,
        pacer: OutboundPacer,
        start_speaking: Callable[[Reply, str], None],
        ended: Callable[[], bool],
    ) -> None:
        self._s = services
        self._after_s = services.settings.backend.filler_after_ms / 1000
        self._rate = basics.start.sample_rate
        self._profile = basics.profile  # read per phrase: the business's voice is applied after this
        self._usage = basics.usage
        self._conversation = basics.conversation
        self._pacer = pacer
        self._start_speaking = start_speaking
        self._ended = ended

    def arm(self, reply: Reply, caller_text: str) -> asyncio.Task[None] | None:
        """The filler's wait for this reply, or None when fillers are off; the reply cancels it when done."""
        if not self._after_s or not self._s.phrases.audio("filler", self._rate, self._profile.voice):
            return None
        return asyncio.ensure_future(self._wait(reply, caller_text))

    async def _wait(self, reply: Reply, caller_text: str) -> None:
        await reply.gate.wait()
        await asyncio.sleep(self._after_s)
        if reply.first_text or reply.started or self._ended():
            return
        pcm = self._s.phrases.audio("filler", self._rate, self._profile.voice)
        self._start_speaking(reply, caller_text)
        seconds = len(pcm) / 2 / self._rate
        self._pacer.play(pcm)
        # Out now, not held for the reply's first audio to fill its last chunk; the padding is lead-in too.
        reply.lead_in_s = seconds + self._pacer.flush()
        self._usage.tts_seconds += seconds
        if reply.line is not None:
            self._conversation.note_filler(reply.line, self._s.phrases.text("filler"))
        self._s.metrics.fillers.inc()
