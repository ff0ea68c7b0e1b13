"""Typed keys for the shared services stored on the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from voicebridge.admission.gate import CallGate
from voicebridge.admission.load_guard import OverloadGuard
from voicebridge.admission.registry import CallRegistry
from voicebridge.backends.base import Backend
from voicebridge.call.phrases import PhraseCache
from voicebridge.call.services import CallServices
from voicebridge.config.schema import Settings
from voicebridge.records.outbox import Outbox
from voicebridge.server.memory import IdleMemoryReturner
from voicebridge.server.metrics import Metrics
from voicebridge.speech.base import SpeechToText, TextToSpeech
from voicebridge.speech.models import ModelCache
from voicebridge.telephony.stream_tokens import StreamTokens

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
REGISTRY = web.AppKey("registry", CallRegistry)
GATE = web.AppKey("gate", CallGate)
MODELS = web.AppKey("models", ModelCache)
STT = web.AppKey("stt", SpeechToText)
TTS = web.AppKey("tts", TextToSpeech)
BACKEND = web.AppKey("backend", Backend)
PHRASES = web.AppKey("phrases", PhraseCache)
CALL_SERVICES = web.AppKey("call_services", CallServices)
OUTBOX = web.AppKey("outbox", Outbox)
STREAM_TOKENS = web.AppKey("stream_tokens", StreamTokens)
LOAD = web.AppKey("load", OverloadGuard)
IDLE_MEMORY = web.AppKey("idle_memory", IdleMemoryReturner)
