"""A TTS engine with a stand-in: when the primary (Azure) fails before any audio, the fallback (Piper) speaks.

After a failure the primary is left alone for a cool-down, so a dead service costs one failed attempt
per cool-down rather than one per sentence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from voicebridge.speech.base import DEFAULT_VOICE, Closable, SpeechEngineError, TextToSpeech, Voice

logger = logging.getLogger("voicebridge.tts")

COOL_DOWN_S = 30.0


class FallbackTTS:
    """Speaks with `primary`, or with `fallback` when the primary fails before its first audio."""

    def __init__(
        self,
        primary: TextToSpeech,
        fallback: TextToSpeech,
        on_fallback: Callable[[str], None] = lambda _reason: None,
        cool_down_s: float = COOL_DOWN_S,
    ) -> None:
        self.name = primary.name
        self._primary = primary
        self._fallback = fallback
        self._on_fallback = on_fallback
        self._cool_down = cool_down_s
        self._primary_down_until = 0.0
        # Which engines hold something to release is known now; close() need not ask them again.
        self._closable = [engine for engine in (primary, fallback) if isinstance(engine, Closable)]

    async def synthesize(
        self, text: str, sample_rate: int, voice: Voice = DEFAULT_VOICE
    ) -> AsyncIterator[bytes]:
        """Yield PCM16 from the primary, or from the fallback when the primary cannot start; both are given
        the call's voice, and each speaks a name not of its kind in its configured voice."""
        if time.monotonic() >= self._primary_down_until:
            started = False
            try:
                async with aclosing(self._primary.synthesize(text, sample_rate, voice)) as audio:
                    async for pcm in audio:
                        started = True
                        yield pcm
                return
            except SpeechEngineError as exc:
                if started:  # half a sentence is out: saying it again in another voice would be worse
                    raise
                self._primary_down_until = time.monotonic() + self._cool_down
                logger.warning(
                    "%s TTS failed, speaking with %s for %.0fs: %s",
                    self._primary.name,
                    self._fallback.name,
                    self._cool_down,
                    exc,
                )
                self._on_fallback("error")
        else:
            self._on_fallback("cooling_down")
        async with aclosing(self._fallback.synthesize(text, sample_rate, voice)) as audio:
            async for pcm in audio:
                yield pcm

    def close(self) -> None:
        """Close both engines."""
        for engine in self._closable:
            engine.close()
