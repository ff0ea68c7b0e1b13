"""The campaigns in the daemon: the store, the runner task and the operations, started by their own
cleanup context (server/app.py) after everything a call needs is up.

The dialler and its attempt events are the daemon's own (server.keys.DIALER / ATTEMPTS, set when the
app is built): a campaign dials exactly as `voicebridge dial` does."""

from __future__ import annotations

import logging
import math
import time

from aiohttp import web

from voicebridge.admission.registry import CallRegistry
from voicebridge.campaigns.dnc import DoNotCall
from voicebridge.campaigns.runner import CampaignRunner
from voicebridge.campaigns.service import Campaigns
from voicebridge.campaigns.store import CampaignStore
from voicebridge.outbound.dialer import AttemptEvents, Dialer
from voicebridge.server.keys import ATTEMPTS, DIALER, REGISTRY, SETTINGS

logger = logging.getLogger("voicebridge.campaigns")


class RegistryLoad:
    """The registry's live calls (inbound and outbound streams alike) and capacity, as pacing.CallLoad."""

    def __init__(self, registry: CallRegistry) -> None:
        self._registry = registry

    def live_calls(self) -> int:
        return self._registry.active_count

    def capacity(self) -> int:
        return self._registry.capacity


async def open_campaigns(app: web.Application) -> tuple[Campaigns, CampaignRunner, CampaignStore]:
    """Open <state_dir>/campaigns.sqlite3, settling attempts a previous run left open; OSError,
    sqlite3.Error or StoreTooNew when it cannot be (the store is closed again)."""
    settings = app[SETTINGS]
    config = settings.campaigns
    dialer: Dialer = app[DIALER]
    events: AttemptEvents = app[ATTEMPTS]
    capacity = settings.server.max_concurrent_calls
    if capacity - math.ceil(capacity * config.inbound_reserve) < 1:
        logger.warning(
            "campaigns: server.max_concurrent_calls %d with campaigns.inbound_reserve %.2f leaves campaigns "
            "no call at all; nothing will be dialled",
            capacity,
            config.inbound_reserve,
        )
    store = CampaignStore(settings.state_path() / "campaigns.sqlite3")
    try:
        settled = await store.open(time.time())
    except BaseException:
        await store.close()
        raise
    if settled:
        logger.warning("campaigns: %d attempt(s) left open by the last run were settled", settled)
    runner = CampaignRunner(
        store,
        dialer,
        events,
        RegistryLoad(app[REGISTRY]),
        DoNotCall(config.dnc_file),
        inbound_reserve=config.inbound_reserve,
        attempt_timeout_s=config.attempt_timeout_s,
    )
    return Campaigns(store, runner, config), runner, store
