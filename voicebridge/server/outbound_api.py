"""`POST /api/calls`: place one outbound call (management auth, like every /api route: server/access.py).
Hostile bodies are counted 4xx, never a 500."""

from __future__ import annotations

import logging

from aiohttp import web

from voicebridge.outbound.dialer import DialFailed, DialRefused
from voicebridge.outbound.requests import dial_request
from voicebridge.server.bodies import BadInput, json_object
from voicebridge.server.keys import DIALER, METRICS

logger = logging.getLogger("voicebridge.management")

# A refusal's HTTP status: no room now is 503 (try later), the rest are the request's fault.
REFUSAL_STATUS = {"at_capacity": 503, "draining": 503, "overloaded": 503}


async def place_call(request: web.Request) -> web.Response:
    """`{to, from?, context?, provider?}` -> 201 `{call_sid, provider}`."""
    metrics = request.app[METRICS]
    try:
        body = await json_object(request)
        result = await request.app[DIALER].dial(dial_request(body, origin="api"))
    except BadInput as bad:
        metrics.http_rejections.labels(surface="management", reason=bad.reason).inc()
        logger.warning("refused a dial body: %s", bad.reason)
        return web.json_response({"ok": False, "error": bad.reason}, status=bad.status)
    except DialRefused as refused:
        metrics.http_rejections.labels(surface="management", reason=f"dial_{refused.reason}").inc()
        logger.warning("refused a dial: %s", refused.reason)
        status = REFUSAL_STATUS.get(refused.reason, 400)
        return web.json_response(
            {"ok": False, "error": refused.reason, "detail": refused.detail}, status=status
        )
    except DialFailed as failed:
        metrics.errors.labels(kind="dial").inc()
        return web.json_response({"ok": False, "error": "provider_failed", "detail": str(failed)}, status=502)
    return web.json_response({"call_sid": result.call_sid, "provider": result.provider}, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/calls", place_call)
