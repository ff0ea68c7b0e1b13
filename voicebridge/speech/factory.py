"""Build the configured speech engines from one shared model cache, unless they are handed in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voicebridge.config.schema import Settings
from voicebridge.speech.base import OwnSpeechToText, SpeechToText, TextToSpeech
from voicebridge.speech.models import ModelCache

if TYPE_CHECKING:
    from voicebridge.speech.remote_stt import RemoteSTT
    from voicebridge.speech.stt import WhisperSTT


@dataclass(frozen=True, slots=True)
class Engines:
    """Speech engines handed to the daemon instead of built from the config (fault-injection tests,
    bench/naive_daemon.py, embedding); whatever is left None is built from the config."""

    stt: SpeechToText | None = None
    tts: TextToSpeech | None = None
    # Builds a call's own STT engine, given the daemon's model cache so /health's model_loads counts
    # its loads. Only bench/naive_daemon.py sets it: the original one-model-per-call design, measured
    # against the shared engine. None: every call shares the one STT engine.
    stt_per_call: Callable[[ModelCache], OwnSpeechToText] | None = None


def build_stt(
    settings: Settings,
    cache: ModelCache,
    on_language_fallback: Callable[[str], None] | None = None,
    on_fallback: Callable[[str], None] | None = None,
) -> SpeechToText:
    """The STT engine named by `stt.engine`: local faster-whisper, or a remote server with the local model
    standing by (`stt.fallback`). `on_language_fallback` is told each transcription whose call language
    the local model cannot do; `on_fallback` each one the local model took from the remote (and why)."""
    if settings.stt.engine == "whisper":
        return build_local_stt(settings, cache, on_language_fallback)
    remote = build_remote_stt(settings)
    if not settings.stt.fallback:
        return remote
    from voicebridge.speech.stt_fallback import FallbackSTT

    local = build_local_stt(settings, cache, on_language_fallback)
    return FallbackSTT(remote, local, on_fallback or (lambda _reason: None), settings.stt.remote_cool_down_s)


def build_local_stt(
    settings: Settings, cache: ModelCache, on_language_fallback: Callable[[str], None] | None = None
) -> WhisperSTT:
    """Local faster-whisper, whatever `stt.engine` says (the fallback, the simulated caller's ears)."""
    from voicebridge.speech.stt import WhisperSTT

    return WhisperSTT(settings.stt, cache, on_language_fallback or (lambda _language: None))


def build_remote_stt(settings: Settings) -> RemoteSTT:
    """The remote engine `stt.engine` names, alone (doctor checks the server without the fallback)."""
    if settings.stt.engine == "wyoming":
        from voicebridge.speech.wyoming_stt import WyomingSTT

        return WyomingSTT(settings.stt)
    from voicebridge.speech.openai_stt import OpenAiSTT

    return OpenAiSTT(settings.stt)


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
