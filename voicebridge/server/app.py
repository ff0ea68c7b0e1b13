"""The app factory: routes, and the shared resources, each started and closed by its own cleanup context.

Resources start in the order they are appended to `cleanup_ctx` and close in the reverse order. When one
fails to start, the runner's cleanup (server/serve.py) closes exactly those already started: a state
directory the outbox cannot open still shuts the engines' worker threads and the backend's HTTP session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import Any

from aiohttp import web

from voicebridge.admission.gate import CallGate
from voicebridge.admission.load_guard import OverloadGuard
from voicebridge.admission.registry import CallRegistry
from voicebridge.backends import build_backend
from voicebridge.backends.base import BudgetCheck, BusinessLookup, RecordSink
from voicebridge.backends.business import BusinessDirectory, ConfigNumbers
from voicebridge.call.phrases import PhraseCache
from voicebridge.call.services import CallServices
from voicebridge.campaigns.store_sql import StoreTooNew
from voicebridge.campaigns.wiring import open_campaigns
from voicebridge.cluster.wiring import add_cluster_routes, shared_state
from voicebridge.config.schema import Settings
from voicebridge.outbound.attempts import AttemptTracker
from voicebridge.outbound.pending import PendingDials
from voicebridge.outbound.service import OutboundDialer
from voicebridge.records.outbox import Outbox
from voicebridge.records.report import REPORT_KIND, ReportSink
from voicebridge.server import management, management_campaigns, outbound_api
from voicebridge.server.access import access_control, stream_tokens
from voicebridge.server.body_deadline import body_deadline
from voicebridge.server.keys import (
    ATTEMPTS,
    BACKEND,
    CALL_FACTS,
    CALL_SERVICES,
    CALLER_RATES,
    CAMPAIGNS,
    DIALER,
    ENGINES,
    GATE,
    IDLE_MEMORY,
    LOAD,
    METRICS,
    MODELS,
    MODELS_LOADED,
    OUTBOX,
    PHRASES,
    REGISTRY,
    REPORT_SINK,
    SETTINGS,
    STREAM_TOKENS,
    STT,
    TTS,
    WARM_UP,
)
from voicebridge.server.logs import MalformedRequestLog
from voicebridge.server.memory import IdleMemoryReturner, glibc_malloc_trim
from voicebridge.server.metrics import Metrics
from voicebridge.server.stream_endpoint import stream_handler
from voicebridge.server.warmup import warm_up
from voicebridge.speech.base import AsyncClosable, Closable, SttCapacity
from voicebridge.speech.factory import Engines, build_stt, build_tts
from voicebridge.speech.models import ModelCache
from voicebridge.telephony import providers
from voicebridge.telephony.providers import TelephonyControl

__all__ = ["CannotStart", "create_app"]

logger = logging.getLogger("voicebridge.daemon")

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


class CannotStart(Exception):
    """A resource could not start (an unusable state directory, say); the message is one line for the
    operator. serve() logs it and closes whatever had started before it."""


async def malformed_requests_counted(app: web.Application) -> AsyncIterator[None]:
    """While the app runs, aiohttp's tracebacks for malformed requests become one counted line each."""
    rejections = app[METRICS].http_rejections.labels(surface="http", reason="bad_http_request")
    server_log = logging.getLogger("aiohttp.server")
    log_filter = MalformedRequestLog(rejections.inc)
    server_log.addFilter(log_filter)
    yield
    server_log.removeFilter(log_filter)


def _close_engine(engine: object) -> None:
    if isinstance(engine, Closable):  # an optional capability, declared in speech/base.py
        engine.close()


async def speech_to_text(app: web.Application) -> AsyncIterator[None]:
    """The STT engine (its model and worker threads): handed in, or loaded from the config."""
    started = time.perf_counter()
    # Model loading blocks for ~1 s; keep the loop free for signals while it happens.
    metrics = app[METRICS]
    stt = app[ENGINES].stt or await asyncio.to_thread(
        build_stt,
        app[SETTINGS],
        app[MODELS],
        lambda _language: metrics.language_fallbacks.inc(),
        lambda reason: metrics.stt_fallbacks.labels(reason=reason).inc(),
    )
    if isinstance(stt, SttCapacity):
        # The overload guard judges load against the workers the engine really runs; without the
        # capacity it counts one worker and exports no queue depth.
        app[LOAD].stt_workers = stt.workers
        app[METRICS].track_stt_queue(lambda: stt.queue_depth)
    metrics.stt_workers.set(app[LOAD].stt_workers)
    app[STT] = stt
    logger.info("stt %s ready in %.2fs", stt.name, time.perf_counter() - started)
    yield
    if isinstance(stt, AsyncClosable):  # a remote engine's connection pool (speech/base.py)
        await stt.aclose()
    _close_engine(stt)


async def text_to_speech(app: web.Application) -> AsyncIterator[None]:
    """The TTS engine (its voice and worker threads, or the Azure SDK's): handed in, or from the config."""
    started = time.perf_counter()
    metrics = app[METRICS]
    tts = app[ENGINES].tts or await asyncio.to_thread(
        build_tts,
        app[SETTINGS],
        app[MODELS],
        None,
        lambda reason: metrics.tts_fallbacks.labels(reason=reason).inc(),
    )
    app[TTS] = tts
    logger.info("tts %s ready in %.2fs", tts.name, time.perf_counter() - started)
    yield
    _close_engine(tts)


async def fixed_phrases(app: web.Application) -> AsyncIterator[None]:
    """The configured prompts (greeting, apology, goodbye, ...) synthesised once, before the first call."""
    phrases = PhraseCache()
    await phrases.prepare(app[TTS], app[SETTINGS].prompts)
    app[PHRASES] = phrases
    yield
    await phrases.close()


async def warmed_engines(app: web.Application) -> AsyncIterator[None]:
    """Not a resource: every engine path a first turn takes, run once before /ready says yes."""
    app[WARM_UP] = await warm_up(app[STT], app[TTS], app[PHRASES], app[SETTINGS].turn)
    yield


async def backend_connection(app: web.Application) -> AsyncIterator[None]:
    """The reply backend and its HTTP session (node, openai; echo holds nothing)."""
    backend = build_backend(app[SETTINGS].backend)
    await backend.start()
    app[BACKEND] = backend
    # The backend's optional capabilities, declared in backends/base.py, are looked up once here; each
    # user is handed the capability or None. The gate asks a budget check before a call is answered.
    budget = backend if isinstance(backend, BudgetCheck) else None
    app[GATE] = CallGate(app[SETTINGS], app[METRICS], budget, app[CALLER_RATES], app[CALL_FACTS])
    yield
    await backend.close()


async def report_connection(app: web.Application) -> AsyncIterator[None]:
    """The post-call reports' sink and its HTTP session, when `[report] url` is set (any backend kind)."""
    if not app[SETTINGS].report.url:
        yield
        return
    sink = ReportSink(app[SETTINGS].report)
    await sink.start()
    app[REPORT_SINK] = sink
    yield
    await sink.close()


async def record_outbox(app: web.Application) -> AsyncIterator[None]:
    """The durable call records (SQLite in the state directory) and their delivery task."""
    settings, backend = app[SETTINGS], app[BACKEND]
    # Records go to the backend when it takes them (node); otherwise they are kept in the file.
    sink = backend if isinstance(backend, RecordSink) else None
    outbox = Outbox(
        settings.state_path() / "outbox.sqlite3",
        sink,
        # Reports go to their own sink, never to the backend; without one they are kept in the file.
        routes={REPORT_KIND: app.get(REPORT_SINK)},
        retry_base_s=settings.outbox.retry_base_s,
        retry_cap_s=settings.outbox.retry_cap_s,
        metrics=app[METRICS],
    )
    try:
        await outbox.open()
    except BaseException as exc:
        await outbox.close()  # its worker thread runs from construction: an outbox that cannot open shuts it
        if isinstance(exc, OSError | sqlite3.Error):  # SQLite's own message does not say which file
            raise CannotStart(f"outbox {outbox.path}: {exc}") from exc
        raise
    app[OUTBOX] = outbox
    yield
    await outbox.close()


async def call_services(app: web.Application) -> AsyncIterator[None]:
    """Not a resource: what every call is handed, assembled once the resources above are up."""
    settings, stt, tts, backend = app[SETTINGS], app[STT], app[TTS], app[BACKEND]
    per_call = app[ENGINES].stt_per_call
    app[CALL_SERVICES] = CallServices(
        settings,
        stt,
        tts,
        backend,
        app[PHRASES],
        app[METRICS],
        app[REGISTRY],
        app[GATE],
        TelephonyControl(settings),
        app[OUTBOX],
        BusinessDirectory(
            backend if isinstance(backend, BusinessLookup) else None, local=ConfigNumbers(settings.numbers)
        ),
        app[LOAD],
        stt_per_call=partial(per_call, app[MODELS]) if per_call is not None else None,
    )
    app[MODELS_LOADED] = {"stt": stt.name, "tts": tts.name, "phrases": len(app[PHRASES])}
    logger.info("models loaded (stt=%s, tts=%s, backend=%s)", stt.name, tts.name, backend.name)
    yield


async def campaigns(app: web.Application) -> AsyncIterator[None]:
    """The outbound campaigns (campaigns/wiring.py): their SQLite file, resumed where the last run left
    them, and the runner task dialling every running one until shutdown."""
    try:
        service, runner, store = await open_campaigns(app)
    except (OSError, sqlite3.Error, StoreTooNew) as exc:
        raise CannotStart(f"campaigns: {exc}") from exc
    app[CAMPAIGNS] = service
    task = asyncio.create_task(runner.run(), name="campaign-runner")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await runner.settled()
    await store.close()


def background_task(run: Callable[[web.Application], Coroutine[Any, Any, None]]) -> CleanupContext:
    """A cleanup context that runs `run(app)` for as long as the daemon runs, and cancels it on shutdown."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(app))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


def create_app(settings: Settings, engines: Engines | None = None) -> web.Application:
    """Build the aiohttp application; the resources start, in order, when its runner is set up."""
    # body_deadline first: no check or handler waits on a body that trickles in.
    app = web.Application(client_max_size=1 << 20, middlewares=[body_deadline, access_control])
    app[SETTINGS] = settings
    app[ENGINES] = engines or Engines()
    app[STREAM_TOKENS] = stream_tokens(settings)
    app[METRICS] = Metrics()
    app[LOAD] = OverloadGuard(
        settings.calls.overload_stt_wait_ms / 1000,
        settings.calls.overload_loop_lag_ms / 1000,
        settings.calls.overload_stt_utilisation,
    )
    registry = app[REGISTRY] = CallRegistry(settings.server.max_concurrent_calls, app[LOAD].refusal)
    attempts = app[ATTEMPTS] = AttemptTracker()
    pending = PendingDials(app[STREAM_TOKENS], settings.outbound.answer_within_s)
    app[DIALER] = OutboundDialer(settings, registry, pending, attempts)
    app[LOAD].count_calls(lambda: registry.active_count)
    app[MODELS] = ModelCache()
    app[IDLE_MEMORY] = IdleMemoryReturner(registry, glibc_malloc_trim())
    app.cleanup_ctx.extend(
        [
            malformed_requests_counted,
            # Before the backend's context: the gate it builds counts callers on the shared state.
            shared_state,
            speech_to_text,
            text_to_speech,
            fixed_phrases,
            warmed_engines,
            backend_connection,
            report_connection,
            record_outbox,
            call_services,
            # After call_services: campaigns dial only once the daemon can carry the calls. An outbound
            # dialler's own context (setting DIALER/ATTEMPT_EVENTS) belongs before this one.
            campaigns,
            # Feeds the overload guard the loop's lag; hands freed heap back to the OS when calls end.
            background_task(lambda app: app[LOAD].watch_loop()),
            background_task(lambda app: app[IDLE_MEMORY].run()),
        ]
    )
    providers.add_routes(app)
    management.add_routes(app)
    outbound_api.add_routes(app)
    management_campaigns.add_routes(app)
    add_cluster_routes(app, settings)
    app.router.add_get("/ws/stream", stream_handler)
    app.router.add_get("/ws/stream/{call_sid}", stream_handler)
    app.router.add_get("/ws/stream/{call_sid}/{token}", stream_handler)
    return app
