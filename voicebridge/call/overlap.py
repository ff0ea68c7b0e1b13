"""Words before a barge-in (`turn.barge_in_min_words`, off at 0): speech over the bot cancels the reply
only once it has said that many words, so a cough, a door or a "hmm" never cuts the bot off at all.

The words cannot wait for the caller's pause (the caller would talk over the bot for the whole of it), so
the overlap is transcribed while it goes on, every OVERLAP_CHECK_S, at the lowest priority (a guess: the
confirmed turns of other calls go first). Back-channel words (`turn.backchannel_words`) do not count. An
overlap whose turn ends short of the words is let be: the reply plays on, nothing is sent to the backend,
and it is counted (`voicebridge_overlaps_ignored_total`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from voicebridge.audio.turn import DETECTOR_RATE
from voicebridge.call.basics import CallBasics
from voicebridge.call.resume import words_of
from voicebridge.call.services import CallServices
from voicebridge.speech.base import SpeechEngineError

# Half a second of new speech is about one or two words: checking more often only repeats the work.
OVERLAP_CHECK_S = 0.4


def _never_confirmed() -> bool:
    return False


class WordsBeforeBargeIn:
    """One call's check of speech over the bot; `watch` starts it, `stop` ends it."""

    def __init__(
        self,
        services: CallServices,
        basics: CallBasics,
        overlap_audio: Callable[[], bytes | None],
        barge_in: Callable[[], Awaitable[None]],
        spawn: Callable[..., asyncio.Task[None] | None],
    ) -> None:
        turn = services.settings.turn
        self.min_words = turn.barge_in_min_words
        self._backchannel = frozenset(turn.backchannel_words)
        self._s = services
        self._basics = basics
        # The open utterance's audio at the detector's rate, None once it has ended.
        self._overlap_audio = overlap_audio
        self._barge_in = barge_in
        self._spawn = spawn
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.min_words > 0

    @property
    def watching(self) -> bool:
        return self._task is not None and not self._task.done()

    def watch(self) -> None:
        """Speech over the bot reached barge-in length: check its words until they are enough."""
        if not self.watching:
            self._task = self._spawn(self._check_while_speaking(), "overlap")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def enough_words(self, pcm16: bytes) -> bool:
        """Whether this overlap says at least `min_words` words that are not back-channel."""
        try:
            transcript = await self._s.stt.transcribe(
                pcm16, DETECTOR_RATE, _never_confirmed, self._basics.profile.language
            )
        except SpeechEngineError as exc:
            # Unheard is not silent: without words to judge, the caller is let through, as without this.
            self._basics.log.warning("overlap not transcribed (%s): barging in", exc)
            return True
        self._basics.usage.stt_seconds += transcript.audio_seconds
        words = [word for word in words_of(transcript.text) if word not in self._backchannel]
        return len(words) >= self.min_words

    def turn_ended(self, pcm16: bytes, answer: Callable[[], None]) -> None:
        """The overlap's turn ended before its words were enough: judge it whole; `answer` it when they are
        (after the barge-in), else let the reply play on."""
        self.stop()
        self._task = self._spawn(self._judge_turn(pcm16, answer), "overlap")

    async def _judge_turn(self, pcm16: bytes, answer: Callable[[], None]) -> None:
        if not await self.enough_words(pcm16):
            self._task = None
            self._s.metrics.overlaps_ignored.inc()
            self._basics.log.info("speech over the bot had under %d words: not a barge-in", self.min_words)
            return
        self._task = None
        await self._barge_in()
        answer()

    async def _check_while_speaking(self) -> None:
        while True:
            await asyncio.sleep(OVERLAP_CHECK_S)
            if (pcm16 := self._overlap_audio()) is None:
                return
            if await self.enough_words(pcm16):
                self._task = None  # the barge-in it starts must not cancel this task under itself
                await self._barge_in()
                return
