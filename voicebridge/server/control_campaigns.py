"""Campaigns over the control socket (`voicebridge campaign …`): run, status, pause, resume, cancel."""

from __future__ import annotations

from typing import Any

from voicebridge.campaigns.service import CampaignRefused, Campaigns
from voicebridge.server.control_protocol import RequestError

CAMPAIGN_OPERATIONS = (
    "campaign_run",
    "campaign_status",
    "campaign_pause",
    "campaign_resume",
    "campaign_cancel",
)
# What a request may carry besides version/op/id: a key outside these is refused, not ignored (a typo in
# `concurency` must not start a campaign at the default).
_RUN_KEYS = frozenset(
    {"path", "name", "concurrency", "rate_per_minute", "hours", "tz", "max_attempts", "from"}
)
_ENVELOPE = frozenset({"version", "op", "id"})


async def campaign_operation(campaigns: Campaigns | None, op: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run one campaign op; RequestError (a counted refusal) for anything the service refuses."""
    if campaigns is None:
        raise RequestError("unavailable", "this daemon has no campaigns open")
    try:
        if op == "campaign_run":
            unknown = set(request) - _RUN_KEYS - _ENVELOPE
            if unknown:
                raise CampaignRefused("bad_request", f"unknown option(s): {', '.join(sorted(unknown))[:100]}")
            return await campaigns.run(request)
        if op == "campaign_status":
            return await campaigns.status(request.get("campaign"), request.get("numbers") is True)
        return await campaigns.move(op.removeprefix("campaign_"), request.get("campaign"))
    except CampaignRefused as refused:
        raise RequestError(refused.code, str(refused)[:300]) from None
