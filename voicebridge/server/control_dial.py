"""`dial` over the control socket (`voicebridge dial`): the same checks as POST /api/calls."""

from __future__ import annotations

import logging
from typing import Any

from voicebridge.outbound.dialer import Dialer, DialFailed, DialRefused
from voicebridge.outbound.requests import dial_request
from voicebridge.server.control_protocol import RequestError

logger = logging.getLogger("voicebridge.control")


async def dial_operation(dialer: Dialer | None, request: dict[str, Any]) -> dict[str, Any]:
    """Place the call `request` describes ({to, from?, context?, provider?}); its sid and provider."""
    if dialer is None:
        raise RequestError("unavailable", "this daemon places no calls")
    body = {key: value for key, value in request.items() if key not in ("op", "version", "id")}
    try:
        result = await dialer.dial(dial_request(body, origin="cli"))
    except DialRefused as refused:
        raise RequestError(refused.reason, str(refused)[:300]) from None
    except DialFailed as failed:
        raise RequestError("provider_failed", str(failed)[:300]) from None
    return {"call_sid": result.call_sid, "provider": result.provider}
