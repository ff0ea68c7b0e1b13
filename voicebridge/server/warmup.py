"""Before the daemon says it is ready, run once every path a caller's first turn takes.

The first transcription in a fresh process costs more than the rest: measured in-process on 2 cores, a
greeting-length utterance took 121 ms the first time and 82 ms after (CTranslate2 and Silero set up their
buffers and kernels on first use), and the first Piper sentence at 8 kHz 115 ms against ~95 ms. Loading a
model does none of that. The phrases rendered at start-up warm Piper at their own rate only, so this also
speaks one sentence at the phone rate, and runs the turn detector (webrtcvad and its resampler) once.
"""

from __future__ import annotations

import logging
import time
from contextlib import aclosing
from dataclasses import dataclass

from voicebridge.audio.turn import DETECTOR_RATE, TurnDetector, detector_ingress
from voicebridge.call.phrases import PhraseCache
from voicebridge.config.schema import TurnConfig
from voicebridge.speech.base import SpeechEngineError, SpeechToText, TextToSpeech

logger = logging.getLogger("voicebridge.daemon")

PHONE_RATE = 8000
SENTENCE = "Thank you for calling."


@dataclass(frozen=True, slots=True)
class WarmUp:
    """What the warm-up took, for /health; a step that failed is reported, and the daemon starts anyway
    (doctor says why an engine fails; a call then hears the apology as it would have)."""

    stt_ms: float
    tts_ms: float
    failed: str = ""

    def as_dict(self) -> dict[str, float | str]:
        return {"stt_ms": round(self.stt_ms, 1), "tts_ms": round(self.tts_ms, 1), "failed": self.failed}


async def warm_up(stt: SpeechToText, tts: TextToSpeech, phrases: PhraseCache, turn: TurnConfig) -> WarmUp:
    """Speak a sentence at the phone rate, put real speech (the greeting, else that sentence) through the
    turn detector and transcribe it, as a caller's first turn would be."""
    failed: list[str] = []
    started = time.perf_counter()
    speech = b""
    try:
        async with aclosing(tts.synthesize(SENTENCE, PHONE_RATE)) as pieces:
            speech = b"".join([piece async for piece in pieces])
    except SpeechEngineError as exc:
        failed.append(f"tts: {exc}")
    tts_ms = (time.perf_counter() - started) * 1000
    speech = phrases.audio("greeting", PHONE_RATE) or speech
    started = time.perf_counter()
    if speech:
        # Through the call's own path: the phone rate resampled for the detector, whose rate STT gets.
        turn_audio = detector_ingress(PHONE_RATE).process(speech)
        list(TurnDetector(turn).feed(turn_audio))
        try:
            await stt.transcribe(turn_audio, DETECTOR_RATE)
        except SpeechEngineError as exc:
            failed.append(f"stt: {exc}")
    stt_ms = (time.perf_counter() - started) * 1000
    result = WarmUp(stt_ms, tts_ms, "; ".join(failed)[:300])
    if result.failed:
        logger.warning("warm-up: %s", result.failed)
    logger.info("warm-up: first sentence %.0f ms, first turn %.0f ms", result.tts_ms, result.stt_ms)
    return result
