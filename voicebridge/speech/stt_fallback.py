"""A remote STT engine with the local model standing by: no caller's turn is lost to a dead server.

When the remote engine fails, that same utterance is transcribed locally at once (the caller hears the
answer a little later, not an apology), and the server is left alone for `stt.remote_cool_down_s`: a dead
server costs one failed attempt per cool-down, not one per turn. Each turn the local model takes is
counted (voicebridge_stt_fallbacks_total, by reason) and each outage is logged once, on one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from voicebridge.speech.base import Closable, SpeechEngineError, SpeechToText, SttCapacity, Transcript
from voicebridge.speech.remote_stt import RemoteSTT
from voicebridge.speech.scheduler import always_confirmed

logger = logging.getLogger("voicebridge.stt")


class FallbackSTT(SttCapacity):
    """Transcribes with `remote`, or with `local` when the remote fails or is cooling down after a failure."""

    def __init__(
        self,
        remote: RemoteSTT,
        local: SpeechToText,
        on_fallback: Callable[[str], None],
        cool_down_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = remote.name
        self.workers = remote.workers
        self._remote = remote
        self._local = local
        self._on_fallback = on_fallback
        self._cool_down_s = cool_down_s
        self._clock = clock
        self._remote_down_until = 0.0
        self._remote_down = False

    @property
    def queue_depth(self) -> int:
        """Utterances waiting for the server, and for a local worker while the local model stands in."""
        local = self._local.queue_depth if isinstance(self._local, SttCapacity) else 0
        return self._remote.queue_depth + local

    async def transcribe(
        self,
        pcm16: bytes,
        sample_rate: int,
        confirmed: Callable[[], bool] = always_confirmed,
        language: str = "",
    ) -> Transcript:
        """The remote engine's transcript, else the local one's for the same audio."""
        if self._clock() >= self._remote_down_until:
            try:
                transcript = await self._remote.transcribe(pcm16, sample_rate, confirmed, language)
            except SpeechEngineError as exc:
                self._remote_down_until = self._clock() + self._cool_down_s
                if not self._remote_down:
                    logger.warning(
                        "%s; transcribing locally, trying the server again every %gs",
                        exc,
                        self._cool_down_s,
                    )
                self._remote_down = True
                self._on_fallback("error")
            else:
                if self._remote_down:
                    logger.info("%s STT answering again", self._remote.name)
                self._remote_down = False
                return transcript
        else:
            self._on_fallback("cooling_down")
        return await self._local.transcribe(pcm16, sample_rate, confirmed, language)

    async def aclose(self) -> None:
        """Close the remote engine's connections and release the local model's workers."""
        await self._remote.aclose()
        if isinstance(self._local, Closable):
            self._local.close()
