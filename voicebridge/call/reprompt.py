"""No dead air from the caller's side: a caller who says nothing is asked whether they are still there, and
after `turn.max_reprompts` such questions unanswered the call says goodbye and ends `no_input`.

Silence counts only while the call listens with nothing under way (no reply pending or playing, no speech
in progress, no way out): the bot's own lines and the caller's speech restart the clock. A watch task, not
the inbound audio, keeps the time, so a provider with silence suppression (no frames while the caller is
quiet) is re-prompted too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from voicebridge.call.basics import CallBasics
from voicebridge.call.services import CallServices

# The watch looks this often at most; finer for a short setting so a re-prompt is late by at most a tenth.
POLL_S = 0.25


class Reprompter:
    """One call's silence watch; `run` is one of the call's tasks while `enabled`."""

    def __init__(
        self,
        services: CallServices,
        basics: CallBasics,
        idle: Callable[[], bool],
        play_phrase: Callable[[str, bytes], object],
        give_up: Callable[[], object],
    ) -> None:
        turn = services.settings.turn
        self._after_s = turn.reprompt_after_s
        self._max = turn.max_reprompts
        self._s = services
        self._rate = basics.start.sample_rate
        self._profile = basics.profile  # read per phrase: the business's voice is applied after this
        self._log = basics.log
        self._idle = idle
        self._play_phrase = play_phrase
        self._give_up = give_up
        # Re-prompts said since the caller last spoke a turn or pressed a key.
        self.unanswered = 0

    @property
    def enabled(self) -> bool:
        return self._after_s > 0

    def answered(self) -> None:
        """The caller spoke a turn or pressed a key: the count starts again."""
        self.unanswered = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        poll = min(POLL_S, self._after_s / 10)
        quiet_since = loop.time()
        while True:
            await asyncio.sleep(poll)
            now = loop.time()
            if not self._idle():
                quiet_since = now
                continue
            if now - quiet_since < self._after_s:
                continue
            quiet_since = now
            if self.unanswered >= self._max:
                self._log.info("no answer to %d re-prompt(s); ending the call", self.unanswered)
                self._give_up()
                return
            self.unanswered += 1
            self._s.metrics.reprompts.inc()
            self._log.info("caller silent for %.1fs: re-prompt %d", self._after_s, self.unanswered)
            # An empty prompt is not said; the silence still counts towards the goodbye.
            if audio := self._s.phrases.audio("reprompt", self._rate, self._profile.voice):
                self._play_phrase("reprompt", audio)
