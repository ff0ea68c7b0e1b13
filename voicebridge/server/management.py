"""Health probes, metrics, and the HTTP management API (the registry operations the control socket uses)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from voicebridge import __version__
from voicebridge.admission.registry import InvalidNumber, UnknownCall
from voicebridge.cluster.routing import NodeUnreachable
from voicebridge.server.bodies import BadInput, json_object
from voicebridge.server.keys import (
    BACKEND,
    CALL_OPERATIONS,
    IDLE_MEMORY,
    LOAD,
    METRICS,
    MODELS,
    MODELS_LOADED,
    OUTBOX,
    REGISTRY,
    SETTINGS,
    STT,
    TTS,
    WARM_UP,
)
from voicebridge.server.memory import rss_bytes

logger = logging.getLogger("voicebridge.management")


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def process_stats() -> dict[str, int]:
    """This process's resident memory, open file descriptors and asyncio tasks (leak watch, soak tests)."""
    # Not Linux: fall back to the peak RSS the kernel reports, and no fd count.
    rss = rss_bytes() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = -1
    return {
        "rss_bytes": rss,
        "open_fds": fds,
        "asyncio_tasks": len(asyncio.all_tasks()),
        # Python's own heap, in allocator blocks: flat while RSS grows means the growth is native
        # (model runtimes, malloc arenas), not objects the daemon keeps.
        "python_blocks": sys.getallocatedblocks(),
    }


def health_document(app: web.Application) -> dict[str, Any]:
    """What /health reports: engines and versions, models, calls, capacity, uptime, draining."""
    settings = app[SETTINGS]
    tts_package = "azure-cognitiveservices-speech" if app[TTS].name == "azure" else "piper-tts"
    return {
        "status": "draining" if app[REGISTRY].draining else "ok",
        "version": __version__,
        "engines": {
            "stt": {"name": app[STT].name, "version": _package_version("faster-whisper")},
            "tts": {"name": app[TTS].name, "version": _package_version(tts_package)},
            "backend": {"name": app[BACKEND].name},
        },
        "models_loaded": app.get(MODELS_LOADED, {}),
        "model_loads": dict(app[MODELS].loads),
        "warm_up": app[WARM_UP].as_dict() if WARM_UP in app else None,
        **app[REGISTRY].status(),
        "max_concurrent_calls": settings.server.max_concurrent_calls,
        "load": {
            "refusing": app[LOAD].refusal(),
            "stt_wait_p90_ms": round(app[LOAD].stt_wait_p90() * 1000),
            "loop_lag_ms": round(app[LOAD].loop_lag() * 1000),
            "call_capacity_estimate": app[LOAD].call_capacity(),
        },
        # Counts as of the outbox's last delivery pass: /health never waits for SQLite.
        "outbox": app[OUTBOX].health() if OUTBOX in app else None,
        "process": process_stats(),
        "idle_memory": {
            "trims": app[IDLE_MEMORY].trims,
            "released_mb": round(app[IDLE_MEMORY].released_bytes / 2**20, 1),
            "last_trim_ms": round(app[IDLE_MEMORY].last_trim_ms, 1),
        },
    }


async def health(request: web.Request) -> web.Response:
    """Detailed status for humans and dashboards."""
    return web.json_response(health_document(request.app))


async def live(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    """Readiness: models loaded, not draining, below capacity, not overloaded."""
    registry = request.app[REGISTRY]
    loaded = bool(request.app.get(MODELS_LOADED))
    reasons = [
        reason
        for reason, failing in (
            ("models not loaded", not loaded),
            ("draining", registry.draining),
            ("at capacity", registry.active_count >= registry.capacity),
            ("overloaded", bool(request.app[LOAD].refusal())),
        )
        if failing
    ]
    return web.json_response({"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def calls_active(request: web.Request) -> web.Response:
    """Every live call: this node's, or with ?cluster=1 every node's (each naming its node)."""
    everywhere = request.query.get("cluster", "") in ("1", "true")
    try:
        listed = await request.app[CALL_OPERATIONS].list_calls(everywhere)
    except NodeUnreachable as exc:
        return web.json_response({"ok": False, "error": str(exc)}, status=503)
    return web.json_response(listed)


async def call_hangup(request: web.Request) -> web.Response:
    """End a live call, on whichever node holds it."""
    call_sid = request.match_info["call_sid"]
    try:
        await request.app[CALL_OPERATIONS].hangup(call_sid)
    except UnknownCall:
        return web.json_response({"ok": False, "error": f"no live call {call_sid}"}, status=404)
    except NodeUnreachable as exc:
        return web.json_response({"ok": False, "error": str(exc)}, status=503)
    return web.json_response({"ok": True, "call_sid": call_sid, "action": "hangup"})


async def call_transfer(request: web.Request) -> web.Response:
    """Transfer a live call, on whichever node holds it, to a number given as JSON `{"number": "+91…"}`."""
    call_sid = request.match_info["call_sid"]
    try:
        body = await json_object(request)
    except BadInput as bad:
        request.app[METRICS].http_rejections.labels(surface="management", reason=bad.reason).inc()
        logger.warning("refused a transfer body for %s: %s", call_sid, bad.reason)
        error = f'body must be JSON {{"number": ...}} ({bad.reason})'
        return web.json_response({"ok": False, "error": error}, status=bad.status)
    number = body.get("number", "")
    try:
        await request.app[CALL_OPERATIONS].transfer(call_sid, str(number))
    except InvalidNumber as exc:
        return web.json_response({"ok": False, "error": str(exc)}, status=400)
    except UnknownCall:
        return web.json_response({"ok": False, "error": f"no live call {call_sid}"}, status=404)
    except NodeUnreachable as exc:
        return web.json_response({"ok": False, "error": str(exc)}, status=503)
    return web.json_response({"ok": True, "call_sid": call_sid, "action": "transfer", "number": number})


def add_routes(app: web.Application) -> None:
    """Register probes, metrics and the management API."""
    app.router.add_get("/health", health)
    app.router.add_get("/live", live)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/calls/active", calls_active)
    app.router.add_post("/api/calls/{call_sid}/hangup", call_hangup)
    app.router.add_post("/api/calls/{call_sid}/transfer", call_transfer)
