"""Typed keys for the shared services stored on the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from voicebridge.backends.base import Backend
from voicebridge.config import Settings
from voicebridge.daemon.auth import StreamTokens
from voicebridge.daemon.call import CallServices
from voicebridge.daemon.load import OverloadGuard
from voicebridge.daemon.memory import IdleMemoryReturner
from voicebridge.daemon.metrics import Metrics
from voicebridge.daemon.outbox import Outbox
from voicebridge.daemon.phrases import PhraseCache
from voicebridge.daemon.registry import CallRegistry
from voicebridge.speech.base import SpeechToText, TextToSpeech
from voicebridge.speech.models import ModelCache

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
REGISTRY = web.AppKey("registry", CallRegistry)
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
