"""Build the configured speech engines from one shared model cache."""

from __future__ import annotations

from voicebridge.config import Settings
from voicebridge.speech.base import SpeechToText, TextToSpeech
from voicebridge.speech.models import ModelCache


def build_stt(settings: Settings, cache: ModelCache) -> SpeechToText:
    """The STT engine named by `stt.engine` (faster-whisper today)."""
    from voicebridge.speech.stt import WhisperSTT

    return WhisperSTT(settings.stt, cache)


def build_tts(settings: Settings, cache: ModelCache, engine: str | None = None) -> TextToSpeech:
    """The TTS engine named by `engine` or `tts.engine`; Azure's SDK is imported only when used."""
    chosen = engine or settings.tts.engine
    if chosen == "azure":
        from voicebridge.speech.tts.azure import AzureTTS

        return AzureTTS(settings.tts)
    from voicebridge.speech.tts.piper import PiperTTS

    return PiperTTS(settings.tts, cache)
