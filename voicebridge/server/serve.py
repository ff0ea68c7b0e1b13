"""The serve loop: start the app and its control socket, listen, tell systemd, and drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from voicebridge.admission.registry import CallRegistry
from voicebridge.config.schema import Settings
from voicebridge.server import management
from voicebridge.server.app import CannotStart, create_app
from voicebridge.server.connection_guard import ConnectionLimits, GuardedTCPSite
from voicebridge.server.control import ControlServer, ControlSocketError
from voicebridge.server.keys import CALL_OPERATIONS, CAMPAIGNS, DIALER, METRICS, OUTBOX, REGISTRY, SETTINGS
from voicebridge.server.logs import configure_logging
from voicebridge.server.metrics import Metrics
from voicebridge.server.systemd import SystemdNotifier
from voicebridge.speech.factory import Engines

logger = logging.getLogger("voicebridge.daemon")


async def control_socket(app: web.Application) -> AsyncIterator[None]:
    """The operators' Unix socket, after every other resource: a second daemon on the same socket is
    refused before it takes a port, and the socket closes before the outbox it reads."""
    settings = app[SETTINGS]
    control = ControlServer(
        app[REGISTRY],
        settings.control_socket_path(),
        lambda: management.health_document(app),
        group=settings.control.group,
        outbox=app[OUTBOX],
        metrics=app[METRICS],
        dialer=app[DIALER],
        campaigns=app.get(CAMPAIGNS),
        calls=app[CALL_OPERATIONS],
    )
    await control.start()
    yield
    await control.close()


async def start(app: web.Application, settings: Settings) -> web.AppRunner | None:
    """Start every resource and the listening socket; None (logged on one line) when the daemon cannot
    start, after closing whatever had started."""
    # The keep-alive timer also bounds every request head after a connection's first (connection_guard.py).
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=settings.limits.request_head_timeout_s + 1,
    )
    try:
        await runner.setup()
    except BaseException as exc:
        # Whatever failed, the resources that had started close, last first (aiohttp leaves it to us).
        await runner.cleanup()
        if isinstance(exc, ControlSocketError):
            logger.error("%s", exc)
        elif isinstance(exc, CannotStart | OSError | sqlite3.Error):
            # An unusable state directory or outbox file: one line, not a traceback.
            logger.error("cannot start: %s", exc)
        else:
            raise
        return None
    site = GuardedTCPSite(
        runner, settings.server.host, settings.server.port, ConnectionLimits(settings, app[METRICS])
    )
    try:
        await site.start()
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", settings.server.host, settings.server.port, exc.strerror)
        await runner.cleanup()
        return None
    return runner


async def serve(settings: Settings, notifier: SystemdNotifier, engines: Engines | None = None) -> int:
    """Run until SIGTERM/SIGINT, then drain live calls and exit; returns the process exit code."""
    app = create_app(settings, engines)
    app.cleanup_ctx.append(control_socket)
    runner = await start(app, settings)
    if runner is None:
        return 1
    logger.info("voicebridge listening on http://%s:%d", settings.server.host, settings.server.port)
    if settings.management_api_needs_token and not settings.management.token.get_secret_value():
        logger.warning(
            "management (/api/*, and /metrics, /health unless public) is refused: webhook auth is on, "
            "server.trusted_proxies is set or the daemon listens beyond loopback, and management.token is "
            "empty; set it to use them"
        )
    registry = app[REGISTRY]
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


def run_daemon(settings: Settings, config_path: Path | None = None, engines: Engines | None = None) -> int:
    """Entry point for `voicebridge serve` (and bench/naive_daemon.py, which hands in `engines`)."""
    configure_logging(settings.logging)
    logger.info("config: %s", config_path or "built-in defaults")
    return asyncio.run(serve(settings, SystemdNotifier(), engines))
