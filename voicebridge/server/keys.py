"""Typed keys for everything stored on the aiohttp application: one place to see what the daemon shares."""

from __future__ import annotations

from aiohttp import web

from voicebridge.admission.gate import CallGate
from voicebridge.admission.load_guard import OverloadGuard
from voicebridge.admission.registry import CallRegistry
from voicebridge.backends.base import Backend
from voicebridge.call.phrases import PhraseCache
from voicebridge.call.services import CallServices
from voicebridge.campaigns.service import Campaigns
from voicebridge.cluster.facts import CallFacts
from voicebridge.cluster.nodes import NodeDirectory
from voicebridge.cluster.operations import CallOperations
from voicebridge.cluster.placement import Placement
from voicebridge.cluster.rates import CallerRates
from voicebridge.config.schema import Settings
from voicebridge.outbound.attempts import AttemptTracker
from voicebridge.outbound.service import OutboundDialer
from voicebridge.records.outbox import Outbox
from voicebridge.records.report import ReportSink
from voicebridge.server.memory import IdleMemoryReturner
from voicebridge.server.metrics import Metrics
from voicebridge.server.warmup import WarmUp
from voicebridge.speech.base import SpeechToText, TextToSpeech
from voicebridge.speech.factory import Engines
from voicebridge.speech.models import ModelCache
from voicebridge.telephony.stream_tokens import StreamTokens

# Set by create_app, before the daemon starts: cheap, nothing to close.
SETTINGS = web.AppKey("settings", Settings)
ENGINES = web.AppKey("engines", Engines)
METRICS = web.AppKey("metrics", Metrics)
STREAM_TOKENS = web.AppKey("stream_tokens", StreamTokens)
LOAD = web.AppKey("load", OverloadGuard)
REGISTRY = web.AppKey("registry", CallRegistry)
MODELS = web.AppKey("models", ModelCache)
IDLE_MEMORY = web.AppKey("idle_memory", IdleMemoryReturner)
# Outbound calls (issue 17): the Dialer (its pending dials inside) and the AttemptEvents a campaign
# subscribes to. Nothing to close: each REST request has its own short session.
DIALER = web.AppKey("dialer", OutboundDialer)
ATTEMPTS = web.AppKey("attempts", AttemptTracker)

# The shared state (cluster/wiring.py): the caller rate limit, the gate's facts of calls not yet streaming
# and the choice of node for a new call, each in-process or in Redis; and, only with `[cluster] redis_url`,
# the node directory its heartbeat writes and the router of operator actions to the node holding a call.
CALLER_RATES = web.AppKey("caller_rates", CallerRates)
CALL_FACTS = web.AppKey("call_facts", CallFacts)
PLACEMENT = web.AppKey("placement", Placement)
CALL_OPERATIONS = web.AppKey("call_operations", CallOperations)
CLUSTER_NODES = web.AppKey("cluster_nodes", NodeDirectory)

# The resources, in start order: each is set by its own cleanup context (server/app.py), which closes it.
STT = web.AppKey("stt", SpeechToText)
TTS = web.AppKey("tts", TextToSpeech)
PHRASES = web.AppKey("phrases", PhraseCache)
# Not a resource: what running every engine path once took, before the daemon counts as ready.
WARM_UP = web.AppKey("warm_up", WarmUp)
BACKEND = web.AppKey("backend", Backend)
# Built with the backend (its budget check, if it has one); holds nothing to close.
GATE = web.AppKey("gate", CallGate)
# Set only when `[report] url` is: the post-call reports' sink (its own HTTP session).
REPORT_SINK = web.AppKey("report_sink", ReportSink)
OUTBOX = web.AppKey("outbox", Outbox)

# Set once every resource is up: what each call is handed, and what /ready waits for.
CALL_SERVICES = web.AppKey("call_services", CallServices)
MODELS_LOADED = web.AppKey("models_loaded", dict[str, str | int])

# The campaign operations (campaigns/service.py), set by campaigns/wiring.py's cleanup context.
CAMPAIGNS = web.AppKey("campaigns", Campaigns)
