"""Build the configured speech engines from one shared model cache."""

from __future__ import annotations

from collections.abc import Callable

from voicebridge.config.schema import Settings
from voicebridge.speech.base import SpeechToText, TextToSpeech
from voicebridge.speech.models import ModelCache


def build_stt(settings: Settings, cache: ModelCache) -> SpeechToText:
    """The STT engine named by `stt.engine` (faster-whisper today)."""
    from voicebridge.speech.stt import WhisperSTT

    return WhisperSTT(settings.stt, cache)


def build_tts(
    settings: Settings,
    cache: ModelCache,
    engine: str | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> TextToSpeech:
    """The TTS engine named by `engine` or `tts.engine`, wrapped with its fallback when one is configured."""
    chosen = engine or settings.tts.engine
    if chosen == "azure":
        from voicebridge.speech.tts.azure import AzureTTS

        azure = AzureTTS(settings.tts)
        if settings.tts.fallback_engine == "piper" and engine is None:
            from voicebridge.speech.tts.fallback import FallbackTTS
            from voicebridge.speech.tts.piper import PiperTTS

            return FallbackTTS(azure, PiperTTS(settings.tts, cache), on_fallback or (lambda _reason: None))
        return azure
    from voicebridge.speech.tts.piper import PiperTTS

    return PiperTTS(settings.tts, cache)
