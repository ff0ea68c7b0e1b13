"""The campaign operations the control socket and the management API share: run, status, pause, resume,
cancel. Every value from a request is checked here, with its bounds, before anything is read or stored;
a bad one is a CampaignRefused (a counted refusal or a 4xx), never a traceback."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from voicebridge.campaigns.hours import CallingHours, check_zone, parse_hours
from voicebridge.campaigns.model import CampaignOptions, CampaignState
from voicebridge.campaigns.numbers_csv import (
    ListRejected,
    NumberList,
    normalise_number,
    parse_list,
    read_list,
)
from voicebridge.campaigns.runner import CampaignRunner
from voicebridge.campaigns.store import Campaign, CampaignStore, UnknownCampaign
from voicebridge.config.schema import CampaignsConfig
from voicebridge.telephony.context import CONTROL

logger = logging.getLogger("voicebridge.campaigns")

MAX_PATH_CHARS = 4096
MAX_NAME_CHARS = 100
MAX_NUMBERS_SHOWN = 1000
# Which states each control moves a campaign from.
MOVES: Mapping[str, tuple[CampaignState, tuple[str, ...]]] = MappingProxyType(
    {
        "pause": ("paused", ("running",)),
        "resume": ("running", ("paused",)),
        "cancel": ("cancelled", ("running", "paused")),
    }
)


class CampaignRefused(Exception):
    """A campaign request the daemon refuses; `code` for the counter, `status` for HTTP."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _int(request: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = request.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise CampaignRefused("bad_request", f"{key} must be an integer from {low} to {high}")
    return value


def _number(request: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = request.get(key, default)
    if type(value) not in (int, float) or not math.isfinite(value) or not low < value <= high:
        raise CampaignRefused("bad_request", f"{key} must be a number above {low} and at most {high:g}")
    return float(value)


def _text(request: dict[str, Any], key: str, default: str, limit: int) -> str:
    value = request.get(key, default)
    if not isinstance(value, str) or len(value) > limit:
        raise CampaignRefused("bad_request", f"{key} must be a string of at most {limit} characters")
    return value


def campaign_id(value: Any) -> int:
    """A campaign id from a request (an integer, or its digits as text), bounded."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)
    if type(value) is not int or not 1 <= value < 10**12:
        raise CampaignRefused("bad_request", "campaign id must be a positive integer")
    return value


class Campaigns:
    def __init__(self, store: CampaignStore, runner: CampaignRunner, config: CampaignsConfig) -> None:
        self._store = store
        self._runner = runner
        self._config = config

    def options(self, request: dict[str, Any]) -> CampaignOptions:
        """The request's options over the config's defaults; CampaignRefused for a bad one."""
        config = self._config
        try:
            start, end = parse_hours(_text(request, "hours", config.hours, 16))
            zone = check_zone(_text(request, "tz", config.time_zone, 64))
        except ValueError as exc:
            raise CampaignRefused("bad_request", str(exc)[:200]) from None
        caller_id = _text(request, "from", "", 40)
        if caller_id and normalise_number(caller_id) is None:
            raise CampaignRefused("bad_request", "from must be an E.164 number (+ and 8-15 digits)")
        return CampaignOptions(
            concurrency=_int(request, "concurrency", config.concurrency, 1, 1000),
            rate_per_minute=_number(request, "rate_per_minute", config.rate_per_minute, 0, 6000),
            hours=CallingHours(start, end, zone),
            max_attempts=_int(request, "max_attempts", config.max_attempts, 1, 10),
            retry_base_s=config.retry_base_s,
            retry_cap_s=config.retry_cap_s,
            from_number=normalise_number(caller_id) or "",
        )

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start a campaign from a CSV on this host (`path`, absolute): the control socket's way."""
        path_text = _text(request, "path", "", MAX_PATH_CHARS)
        if not path_text or "\x00" in path_text or not Path(path_text).is_absolute():
            raise CampaignRefused("bad_request", "path must be the list's absolute path on the daemon's host")
        path = Path(path_text)
        options = self.options(request)
        config = self._config
        try:
            listed = await asyncio.to_thread(read_list, path, config.max_rows, config.max_list_bytes)
        except ListRejected as exc:
            raise CampaignRefused("bad_list", str(exc)[:300]) from None
        return await self._start(_text(request, "name", path.name, MAX_NAME_CHARS), options, listed)

    async def run_text(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start a campaign from the CSV sent as `csv` (text): the management API's way, which never reads
        a path on the host for a remote client."""
        text = request.get("csv")
        if not isinstance(text, str) or not text:
            raise CampaignRefused("bad_request", "csv must be the list's text")
        options = self.options(request)
        if len(text.encode("utf-8", "replace")) > self._config.max_list_bytes:
            raise CampaignRefused("bad_list", f"the list is over {self._config.max_list_bytes} bytes")
        try:
            listed = await asyncio.to_thread(parse_list, text, self._config.max_rows)
        except ListRejected as exc:
            raise CampaignRefused("bad_list", str(exc)[:300]) from None
        return await self._start(_text(request, "name", "api", MAX_NAME_CHARS), options, listed)

    async def _start(self, name: str, options: CampaignOptions, listed: NumberList) -> dict[str, Any]:
        name = CONTROL.sub("", name) or "campaign"
        campaign = await self._store.create(name, options, listed.entries)
        self._runner.wake()
        logger.info(
            "campaign %d started: %d number(s), %d bad row(s), %d duplicate(s)",
            campaign,
            len(listed.entries),
            listed.bad_rows,
            listed.duplicates,
        )
        return {
            "id": campaign,
            "name": name,
            "numbers": len(listed.entries),
            "bad_rows": listed.bad_rows,
            "problems": [{"line": line, "reason": reason} for line, reason in listed.problems],
            "duplicates": listed.duplicates,
        }

    async def status(self, ref: Any = None, with_numbers: bool = False) -> dict[str, Any]:
        """One campaign's progress (and its numbers when asked), or every campaign's."""
        if ref is None:
            return {"campaigns": [await self._runner.status(c) for c in await self._store.campaigns()]}
        campaign = await self._campaign(campaign_id(ref))
        status = await self._runner.status(campaign)
        if with_numbers:
            status["rows"] = await self._store.numbers(campaign.id, MAX_NUMBERS_SHOWN)
        return status

    async def move(self, action: str, ref: Any) -> dict[str, Any]:
        """pause, resume or cancel; a campaign not in a state the move starts from is refused (409)."""
        state, allowed_from = MOVES[action]
        campaign = await self._campaign(campaign_id(ref))
        if not await self._store.set_state(campaign.id, state, allowed_from):
            raise CampaignRefused("bad_state", f"campaign {campaign.id} is {campaign.state}", 409)
        self._runner.wake()
        logger.info("campaign %d %s", campaign.id, state)
        return {"id": campaign.id, "state": state}

    async def _campaign(self, campaign: int) -> Campaign:
        try:
            return await self._store.campaign(campaign)
        except UnknownCampaign:
            raise CampaignRefused("unknown_campaign", f"no campaign {campaign}", 404) from None
