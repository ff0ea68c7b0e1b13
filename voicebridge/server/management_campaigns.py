"""Campaigns over the management API (management auth, like every /api/ path; see server/access.py).

POST /api/campaigns                      {"csv": "<the list>", "concurrency": 4, ...} -> 201 {id, ...}
GET  /api/campaigns                      every campaign's progress
GET  /api/campaigns/{id}[?numbers=1]     one campaign's progress (and its numbers)
POST /api/campaigns/{id}/pause|resume|cancel
"""

from __future__ import annotations

import logging

from aiohttp import web

from voicebridge.campaigns.service import CampaignRefused
from voicebridge.server.bodies import BadInput, json_object
from voicebridge.server.keys import CAMPAIGNS, METRICS

logger = logging.getLogger("voicebridge.management")

_RUN_KEYS = frozenset(
    {"csv", "name", "concurrency", "rate_per_minute", "hours", "tz", "max_attempts", "from"}
)


def _refused(request: web.Request, reason: str, message: str, status: int) -> web.Response:
    request.app[METRICS].http_rejections.labels(surface="management", reason=reason).inc()
    logger.warning("campaign request refused: %s", reason)
    return web.json_response({"ok": False, "code": reason, "error": message}, status=status)


async def campaigns_create(request: web.Request) -> web.Response:
    service = request.app.get(CAMPAIGNS)
    if service is None:
        return _refused(request, "unavailable", "this daemon has no campaigns open", 503)
    try:
        body = await json_object(request)
    except BadInput as bad:
        return _refused(request, bad.reason, f"body must be a JSON object ({bad.reason})", bad.status)
    unknown = set(body) - _RUN_KEYS
    if unknown:
        return _refused(request, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))[:100]}", 400)
    try:
        result = await service.run_text(body)
    except CampaignRefused as refused:
        return _refused(request, refused.code, str(refused)[:300], refused.status)
    return web.json_response({"ok": True, **result}, status=201)


async def campaigns_status(request: web.Request) -> web.Response:
    service = request.app.get(CAMPAIGNS)
    if service is None:
        return _refused(request, "unavailable", "this daemon has no campaigns open", 503)
    ref = request.match_info.get("campaign")
    try:
        result = await service.status(ref, request.query.get("numbers") == "1")
    except CampaignRefused as refused:
        return _refused(request, refused.code, str(refused)[:300], refused.status)
    return web.json_response({"ok": True, **result})


async def campaigns_move(request: web.Request) -> web.Response:
    service = request.app.get(CAMPAIGNS)
    if service is None:
        return _refused(request, "unavailable", "this daemon has no campaigns open", 503)
    try:
        result = await service.move(request.match_info["action"], request.match_info["campaign"])
    except CampaignRefused as refused:
        return _refused(request, refused.code, str(refused)[:300], refused.status)
    return web.json_response({"ok": True, **result})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/campaigns", campaigns_create)
    app.router.add_get("/api/campaigns", campaigns_status)
    app.router.add_get("/api/campaigns/{campaign}", campaigns_status)
    app.router.add_post("/api/campaigns/{campaign}/{action:pause|resume|cancel}", campaigns_move)
