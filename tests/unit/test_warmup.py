"""Every engine path a caller's first turn takes runs once before the daemon counts as ready."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from voicebridge.audio.turn import DETECTOR_RATE
from voicebridge.call.phrases import PhraseCache
from voicebridge.config.schema import PromptsConfig, Settings, TurnConfig
from voicebridge.server import app as app_module
from voicebridge.server.keys import MODELS_LOADED, WARM_UP
from voicebridge.server.warmup import PHONE_RATE, SENTENCE, warm_up
from voicebridge.speech.base import DEFAULT_VOICE, SpeechEngineError, Transcript, Voice
from voicebridge.speech.factory import Engines
from voicebridge.speech.scheduler import always_confirmed


class RecordingSTT:
    """Notes each utterance it is given, and whether the daemon already counted as ready then."""

    name = "recording-stt"

    def __init__(self, ready: Callable[[], bool] = lambda: False, fail: bool = False) -> None:
        self.heard: list[tuple[int, int, bool]] = []
        self._ready = ready
        self._fail = fail

    async def transcribe(
        self,
        pcm16: bytes,
        sample_rate: int,
        confirmed: Callable[[], bool] = always_confirmed,
        language: str = "",
    ) -> Transcript:
        self.heard.append((len(pcm16), sample_rate, self._ready()))
        if self._fail:
            raise SpeechEngineError("Whisper STT failed: broken")
        return Transcript("thank you for calling", len(pcm16) / 2 / sample_rate, 0.0, self.name)


class ToneTTS:
    """A second of a loud tone for whatever it is asked, at the rate asked; notes each request."""

    name = "tone-tts"

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def synthesize(
        self, text: str, sample_rate: int, voice: Voice = DEFAULT_VOICE
    ) -> AsyncIterator[bytes]:
        self.asked.append((text, sample_rate))
        yield (b"\x00\x40\x00\xc0" * (sample_rate // 2))[: sample_rate * 2]


async def test_warm_up_speaks_at_the_phone_rate_and_transcribes_the_greeting_at_the_detector_rate() -> None:
    stt, tts, phrases = RecordingSTT(), ToneTTS(), PhraseCache()
    await phrases.prepare(
        tts, PromptsConfig(greeting="Hello there.", busy="", goodbye="", transfer="", apology="")
    )
    greeting_seconds = len(phrases.audio("greeting", PHONE_RATE)) / 2 / PHONE_RATE

    result = await warm_up(stt, tts, phrases, TurnConfig())

    assert (SENTENCE, PHONE_RATE) in tts.asked
    assert len(stt.heard) == 1
    samples, rate, _ = stt.heard[0]
    assert rate == DETECTOR_RATE
    # The greeting, resampled for the detector as a caller's audio would be (the filter holds back a little).
    assert abs(samples / 2 / DETECTOR_RATE - greeting_seconds) < 0.05
    assert result.failed == ""


async def test_an_engine_failing_its_warm_up_is_reported_and_does_not_stop_the_start() -> None:
    stt, tts = RecordingSTT(fail=True), ToneTTS()

    result = await warm_up(stt, tts, PhraseCache(), TurnConfig())

    assert len(stt.heard) == 1  # no greeting configured: the spoken sentence stands in
    assert result.failed.startswith("stt: ") and "broken" in result.failed


async def test_the_daemon_warms_up_before_it_counts_as_ready(tmp_path: Path) -> None:
    settings = Settings(
        server={"host": "127.0.0.1", "port": 0, "state_dir": str(tmp_path / "state")},
        control={"socket_path": str(tmp_path / "control.sock")},
    )
    app: web.Application | None = None
    stt = RecordingSTT(ready=lambda: app is not None and MODELS_LOADED in app)
    app = app_module.create_app(settings, Engines(stt=stt, tts=ToneTTS()))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert [ready for _, _, ready in stt.heard] == [False]
        assert MODELS_LOADED in app and app[WARM_UP].failed == ""
    finally:
        await runner.cleanup()
