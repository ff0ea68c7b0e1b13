"""What a call needs, built once per daemon and injected: the engines, the backend and the daemon's parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from voicebridge.admission.gate import CallGate
from voicebridge.admission.load_guard import OverloadGuard
from voicebridge.admission.registry import CallRegistry
from voicebridge.backends.base import Backend
from voicebridge.backends.business import BusinessDirectory
from voicebridge.call.phrases import PhraseCache
from voicebridge.config.schema import Settings
from voicebridge.records.outbox import Outbox
from voicebridge.server.metrics import Metrics
from voicebridge.speech.base import OwnSpeechToText, SpeechToText, TextToSpeech
from voicebridge.telephony.base import CallControl


@dataclass(frozen=True, slots=True)
class CallServices:
    """The shared, long-lived things a call uses; built once per daemon and injected."""

    settings: Settings
    stt: SpeechToText
    tts: TextToSpeech
    backend: Backend
    phrases: PhraseCache
    metrics: Metrics
    registry: CallRegistry
    gate: CallGate
    telephony: CallControl
    outbox: Outbox
    business: BusinessDirectory
    load: OverloadGuard
    # Set only by a benchmark (the original design's model per call, for bench/'s comparison): builds a
    # call's own STT engine, model and all. The stream session then owns and closes that engine.
    stt_per_call: Callable[[], OwnSpeechToText] | None = None
