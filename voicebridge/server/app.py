"""The daemon: app factory (routes, shared services in cleanup_ctx) and the serve loop (drain, sd_notify)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from voicebridge.admission.gate import CallGate
from voicebridge.admission.load_guard import OverloadGuard
from voicebridge.admission.registry import CallRegistry
from voicebridge.backends import build_backend
from voicebridge.backends.base import BudgetCheck, BusinessLookup, RecordSink
from voicebridge.backends.business import BusinessDirectory
from voicebridge.call.phrases import PhraseCache
from voicebridge.call.services import CallServices
from voicebridge.config.schema import Settings
from voicebridge.records.outbox import Outbox
from voicebridge.server import management
from voicebridge.server.access import access_control, stream_tokens
from voicebridge.server.body_deadline import body_deadline
from voicebridge.server.connection_guard import ConnectionLimits, GuardedTCPSite
from voicebridge.server.control import ControlServer, ControlSocketError
from voicebridge.server.keys import (
    BACKEND,
    CALL_SERVICES,
    GATE,
    IDLE_MEMORY,
    LOAD,
    METRICS,
    MODELS,
    OUTBOX,
    PHRASES,
    REGISTRY,
    SETTINGS,
    STREAM_TOKENS,
    STT,
    TTS,
)
from voicebridge.server.logs import MalformedRequestLog, configure_logging
from voicebridge.server.memory import IdleMemoryReturner, glibc_malloc_trim
from voicebridge.server.metrics import Metrics
from voicebridge.server.stream_endpoint import stream_handler
from voicebridge.server.systemd import SystemdNotifier
from voicebridge.speech.base import Closable, SpeechToText, TextToSpeech
from voicebridge.speech.factory import build_stt, build_tts
from voicebridge.speech.models import ModelCache
from voicebridge.telephony import providers
from voicebridge.telephony.providers import TelephonyControl

logger = logging.getLogger("voicebridge.daemon")


async def speech_services(app: web.Application) -> AsyncIterator[None]:
    """Load the models and fixed phrases once, before the daemon listens; release them on exit."""
    settings = app[SETTINGS]
    started = time.perf_counter()
    cache = app[MODELS]
    # Model loading blocks for ~1 s; keep the loop free for signals while it happens.
    injected = app.get(ENGINES)
    metrics = app[METRICS]
    stt = injected.stt if injected and injected.stt else await asyncio.to_thread(build_stt, settings, cache)
    tts = (
        injected.tts
        if injected and injected.tts
        else await asyncio.to_thread(
            build_tts, settings, cache, None, lambda reason: metrics.tts_fallbacks.labels(reason=reason).inc()
        )
    )
    phrases = PhraseCache()
    await phrases.prepare(tts, settings.prompts)
    backend = build_backend(settings.backend)
    await backend.start()
    # The backend's optional capabilities, declared in backends/base.py, are looked up once here; each
    # user is handed the capability or None. Records go to the backend when it takes them (node);
    # otherwise they are kept in the file.
    sink = backend if isinstance(backend, RecordSink) else None
    app[GATE] = CallGate(settings, metrics, backend if isinstance(backend, BudgetCheck) else None)
    outbox = Outbox(
        settings.state_path() / "outbox.sqlite3",
        sink,
        retry_base_s=settings.outbox.retry_base_s,
        retry_cap_s=settings.outbox.retry_cap_s,
        metrics=metrics,
    )
    await outbox.open()
    app[STT], app[TTS], app[PHRASES], app[BACKEND], app[OUTBOX] = stt, tts, phrases, backend, outbox
    app[CALL_SERVICES] = CallServices(
        settings,
        stt,
        tts,
        backend,
        phrases,
        app[METRICS],
        app[REGISTRY],
        app[GATE],
        TelephonyControl(settings),
        outbox,
        BusinessDirectory(backend if isinstance(backend, BusinessLookup) else None),
        app[LOAD],
        stt_per_call=_model_per_call(settings, app[MODELS]) if settings.stt.model_per_call else None,
    )
    app[LOAD].stt_workers = int(getattr(stt, "workers", 1))
    queue_depth = getattr(stt, "queue_depth", None)
    if queue_depth is not None:
        app[METRICS].track_stt_queue(lambda: int(getattr(stt, "queue_depth", 0)))
    app[management.MODELS_LOADED] = {"stt": stt.name, "tts": tts.name, "phrases": len(phrases)}
    logger.info(
        "models loaded in %.2fs (stt=%s, tts=%s, backend=%s)",
        time.perf_counter() - started,
        stt.name,
        tts.name,
        backend.name,
    )
    yield
    await outbox.close()
    await backend.close()
    for engine in (stt, tts):
        if isinstance(engine, Closable):
            engine.close()


async def malformed_requests_counted(app: web.Application) -> AsyncIterator[None]:
    """While the app runs, aiohttp's tracebacks for malformed requests become one counted line each."""
    rejections = app[METRICS].http_rejections.labels(surface="http", reason="bad_http_request")
    server_log = logging.getLogger("aiohttp.server")
    log_filter = MalformedRequestLog(rejections.inc)
    server_log.addFilter(log_filter)
    yield
    server_log.removeFilter(log_filter)


def _model_per_call(settings: Settings, shared: ModelCache) -> Callable[[], SpeechToText]:
    """The original design, kept for bench/: each call loads its own model, with one worker of its own."""
    per_call = settings.stt.model_copy(update={"workers": 1})

    def build() -> SpeechToText:
        from voicebridge.speech.stt import WhisperSTT

        own = ModelCache()
        engine = WhisperSTT(per_call, own)
        shared.loads.update(own.loads)  # so /health's model_loads shows every load
        return engine

    return build


def background_task(
    run: Callable[[web.Application], Coroutine[Any, Any, None]],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that runs `run(app)` for as long as the daemon runs, and cancels it on shutdown."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(app))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


@dataclass(frozen=True, slots=True)
class Engines:
    """Speech engines handed in instead of built from the config (fault-injection tests, embedding)."""

    stt: SpeechToText | None = None
    tts: TextToSpeech | None = None


ENGINES = web.AppKey("engines", Engines)


def create_app(settings: Settings, engines: Engines | None = None) -> web.Application:
    """Build the aiohttp application; heavy services load in its cleanup context."""
    # body_deadline first: no check or handler waits on a body that trickles in.
    app = web.Application(client_max_size=1 << 20, middlewares=[body_deadline, access_control])
    app[SETTINGS] = settings
    if engines is not None:
        app[ENGINES] = engines
    app[STREAM_TOKENS] = stream_tokens(settings)
    app[METRICS] = Metrics()
    app[LOAD] = OverloadGuard(
        settings.calls.overload_stt_wait_ms / 1000,
        settings.calls.overload_loop_lag_ms / 1000,
        settings.calls.overload_stt_utilisation,
    )
    app[REGISTRY] = CallRegistry(settings.server.max_concurrent_calls, app[LOAD].refusal)
    registry = app[REGISTRY]
    app[LOAD].count_calls(lambda: registry.active_count)
    app[MODELS] = ModelCache()
    app[IDLE_MEMORY] = IdleMemoryReturner(app[REGISTRY], glibc_malloc_trim())
    app.cleanup_ctx.append(malformed_requests_counted)
    app.cleanup_ctx.append(speech_services)
    # Feeds the overload guard the loop's lag; hands freed heap back to the OS when calls end.
    app.cleanup_ctx.append(background_task(lambda app: app[LOAD].watch_loop()))
    app.cleanup_ctx.append(background_task(lambda app: app[IDLE_MEMORY].run()))
    providers.add_routes(app)
    management.add_routes(app)
    app.router.add_get("/ws/stream", stream_handler)
    app.router.add_get("/ws/stream/{call_sid}", stream_handler)
    app.router.add_get("/ws/stream/{call_sid}/{token}", stream_handler)
    return app


async def serve(settings: Settings, notifier: SystemdNotifier) -> int:
    """Run until SIGTERM/SIGINT, then drain live calls and exit; returns the process exit code."""
    app = create_app(settings)
    # The keep-alive timer also bounds every request head after a connection's first (connection_guard.py).
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=settings.limits.request_head_timeout_s + 1,
    )
    try:
        await runner.setup()
    except (OSError, sqlite3.Error) as exc:
        # An unusable state directory or outbox file: one line, not a traceback.
        logger.error("cannot start: %s", exc)
        await runner.cleanup()
        return 1
    registry = app[REGISTRY]
    control = ControlServer(
        registry,
        settings.control_socket_path(),
        lambda: management.health_document(app),
        group=settings.control.group,
        outbox=app[OUTBOX],
        metrics=app[METRICS],
    )
    limits = ConnectionLimits(settings, app[METRICS])
    site = GuardedTCPSite(runner, settings.server.host, settings.server.port, limits)
    try:
        # The socket first: a second daemon on the same socket is refused before it takes a port.
        await control.start()
        await site.start()
    except ControlSocketError as exc:
        logger.error("%s", exc)
        await runner.cleanup()
        return 1
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", settings.server.host, settings.server.port, exc.strerror)
        await control.close()
        await runner.cleanup()
        return 1
    logger.info("voicebridge listening on http://%s:%d", settings.server.host, settings.server.port)
    if settings.management_api_needs_token and not settings.management.token.get_secret_value():
        logger.warning(
            "management (/api/*, and /metrics, /health unless public) is refused: webhook auth is on, "
            "server.trusted_proxies is set or the daemon listens beyond loopback, and management.token is "
            "empty; set it to use them"
        )
    notifier.ready(f"listening on {settings.server.host}:{settings.server.port}, 0 active calls")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_count_unhandled(app[METRICS]))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP,
        lambda: logger.warning(
            "SIGHUP: config reload is not supported; restart the service to apply changes"
        ),
    )
    heartbeat = asyncio.create_task(_report_status(notifier, registry))
    await stop.wait()

    logger.info(
        "stopping: draining %d live call(s) for up to %.0fs",
        registry.active_count,
        settings.server.drain_timeout,
    )
    notifier.stopping()
    registry.draining = True
    await registry.drain(settings.server.drain_timeout)
    heartbeat.cancel()
    await control.close()
    await runner.cleanup()
    # Closing the server may have ended calls whose streams were still open: their records first.
    await registry.settle()
    logger.info("stopped")
    return 0


def _count_unhandled(
    metrics: Metrics,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """Count and log what reaches the loop's exception handler; each one is a bug, so tests watch it."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        metrics.unhandled.inc()
        loop.default_exception_handler(context)

    return handle


async def _report_status(notifier: SystemdNotifier, registry: CallRegistry) -> None:
    interval = notifier.watchdog_interval or 5.0
    while True:
        await asyncio.sleep(interval)
        if notifier.watchdog_interval:
            notifier.watchdog()
        notifier.status(f"{registry.active_count} active calls" + (", draining" if registry.draining else ""))


def run_daemon(settings: Settings, config_path: Path | None = None) -> int:
    """Entry point for `voicebridge serve`."""
    configure_logging(settings.logging)
    logger.info("config: %s", config_path or "built-in defaults")
    return asyncio.run(serve(settings, SystemdNotifier()))
