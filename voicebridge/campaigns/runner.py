"""The campaign scheduler: one asyncio task in the daemon dialling every running campaign's due numbers.

Per dial, in this order: the campaign is still running, inside its calling hours, under its concurrency
(counted from dial until CallAttemptEnded) and its rate, the daemon has room with the inbound share kept
(pacing.py), the number is not on the do-not-call list; then the attempt is written (store_sql.py's rule)
and only then is the dial sent. A call still in progress when the hours close is left to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from voicebridge.campaigns.dnc import DncUnreadable, DoNotCall
from voicebridge.campaigns.model import RETRIED_STATUSES, CampaignOptions
from voicebridge.campaigns.pacing import CallLoad, TokenBucket, outbound_room
from voicebridge.campaigns.store import Campaign, CampaignStore, DueNumber
from voicebridge.outbound.dialer import (
    AttemptEvents,
    CallAttemptEnded,
    Dialer,
    DialFailed,
    DialRefused,
    DialRequest,
)

logger = logging.getLogger("voicebridge.campaigns")

# Refusals that say "not now" about the daemon, not about the number: no attempt, tried again later
# (a provider disabled or without a caller id is a config to fix, not a number to give up on).
NOT_NOW_REFUSALS = frozenset({"at_capacity", "provider_disabled", "no_caller_id"})
NOT_NOW_RETRY_S = 30.0
# Ends heard for sids we did not place yet (an end can race its dial's answer), kept this many.
_EARLY_ENDS_KEPT = 1000


class CampaignRunner:
    def __init__(
        self,
        store: CampaignStore,
        dialer: Dialer,
        events: AttemptEvents,
        load: CallLoad,
        dnc: DoNotCall,
        *,
        clock: Callable[[], float] = time.time,
        inbound_reserve: float = 0.2,
        poll_s: float = 1.0,
        attempt_timeout_s: float = 7200.0,
    ) -> None:
        self._store = store
        self._dialer = dialer
        self._load = load
        self._dnc = dnc
        self._clock = clock
        self._reserve = inbound_reserve
        self._poll_s = poll_s
        self._attempt_timeout_s = attempt_timeout_s
        self._wake = asyncio.Event()
        # Campaign id -> the numbers of it dialled and not yet ended.
        self._in_flight: dict[int, set[int]] = {}
        # Call sid -> (campaign, number, that attempt's count, when it was dialled).
        self._placed: dict[str, tuple[int, int, int, float]] = {}
        self._early: OrderedDict[str, CallAttemptEnded] = OrderedDict()
        self._buckets: dict[int, TokenBucket] = {}
        self._settling: set[asyncio.Task[None]] = set()
        events.subscribe(self._on_ended)

    def in_flight(self, campaign: int) -> int:
        return len(self._in_flight.get(campaign, ()))

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Dial until cancelled; one pass's failure is logged and the next pass runs."""
        while True:
            try:
                await self.tick()
            except Exception:
                logger.exception("campaign pass failed")
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that
            # lands as the wait ends, and the daemon's shutdown would then wait on this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()
            self._wake.clear()

    async def settled(self) -> None:
        """Wait for the store writes of ended attempts (shutdown, tests)."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

    async def tick(self) -> None:
        self._give_up_on_lost_ends()
        for campaign in await self._store.campaigns(("running",)):
            await self._campaign_pass(campaign)

    def _give_up_on_lost_ends(self) -> None:
        """An attempt whose end is never heard (a status callback lost on the way) would hold its slot
        and keep its campaign open forever: after attempt_timeout_s it is settled as `lost`, outcome
        `unknown`, and not retried, since the call may well have been answered."""
        deadline = self._clock() - self._attempt_timeout_s
        for sid, (_, _, _, dialled_at) in list(self._placed.items()):
            if dialled_at < deadline:
                logger.warning(
                    "campaign call %s: no end heard in %.0f s, settled as lost", sid, self._attempt_timeout_s
                )
                self._finish(self._placed.pop(sid), None)

    async def _campaign_pass(self, campaign: Campaign) -> None:
        options, in_flight = campaign.options, self._in_flight.setdefault(campaign.id, set())
        if not in_flight and await self._store.open_numbers(campaign.id) == 0:
            if await self._store.set_state(campaign.id, "finished", ("running",)):
                logger.info("campaign %d finished", campaign.id)
            self._in_flight.pop(campaign.id, None)
            self._buckets.pop(campaign.id, None)
            return
        bucket = self._buckets.get(campaign.id)
        if bucket is None:
            bucket = TokenBucket(options.rate_per_minute, options.concurrency, self._clock())
            self._buckets[campaign.id] = bucket
        while len(in_flight) < options.concurrency:
            now = self._clock()
            if not options.hours.is_open(now) or not bucket.ready(now):
                return
            if not outbound_room(self._load, self._total_in_flight(), self._reserve):
                return
            # Paused or cancelled since this pass began: not one more dial.
            if (await self._store.campaign(campaign.id)).state != "running":
                return
            due = await self._store.next_due(campaign.id, now)
            if due is None:
                return
            try:
                if await self._dnc.blocks(due.number):
                    await self._store.skip(due.id, "dnc")
                    logger.info("campaign %d: a number is on the do-not-call list, skipped", campaign.id)
                    continue
            except DncUnreadable as exc:
                logger.error("campaign dialling held: %s", exc)  # fail closed: no dial without the list
                return
            attempt = await self._store.begin_attempt(due.id, options.max_attempts)
            if attempt is None:
                await self._store.settle(due.id, "failed", "", "attempts_exhausted", None)
                continue
            bucket.take()
            in_flight.add(due.id)
            if not await self._dial(campaign, due, attempt):
                return

    def _total_in_flight(self) -> int:
        return sum(len(numbers) for numbers in self._in_flight.values())

    async def _dial(self, campaign: Campaign, due: DueNumber, attempt: int) -> bool:
        """Send the dial whose attempt is written; False when dialling should stop for this pass."""
        request = DialRequest(
            to_number=due.number,
            from_number=campaign.options.from_number,
            context=due.context,
            origin=f"campaign:{campaign.id}",
        )
        in_flight = self._in_flight[campaign.id]
        try:
            result = await self._dialer.dial(request)
        except DialRefused as refused:
            in_flight.discard(due.id)
            # Refused before any provider saw it: no attempt.
            await self._store.undo_attempt(due.id, self._clock() + NOT_NOW_RETRY_S)
            if refused.reason in NOT_NOW_REFUSALS:
                logger.info("campaign %d: dial refused (%s), trying later", campaign.id, refused.reason)
                return False
            await self._store.skip(
                due.id, "dnc" if refused.reason == "dnc" else f"refused:{refused.reason[:32]}"
            )
            return True
        except DialFailed as failed:
            in_flight.discard(due.id)
            await self._settle(
                campaign.id, campaign.options, due.id, attempt, "failed", "unknown", failed.retryable
            )
            return True
        except Exception as exc:  # a dialler bug: the attempt stays counted, retried like a failure
            logger.error("campaign %d: dialler raised %s", campaign.id, type(exc).__name__)
            in_flight.discard(due.id)
            await self._settle(campaign.id, campaign.options, due.id, attempt, "failed", "unknown", True)
            return False
        self._placed[result.call_sid] = (campaign.id, due.id, attempt, self._clock())
        await self._store.mark_in_call(due.id, result.call_sid)
        if (early := self._early.pop(result.call_sid, None)) is not None:
            self._on_ended(early)
        return True

    def _on_ended(self, event: CallAttemptEnded) -> None:
        placed = self._placed.pop(event.call_sid, None)
        if placed is None:
            # Not ours, or its dial has not returned yet: kept a while, in case it is the latter.
            self._early[event.call_sid] = event
            while len(self._early) > _EARLY_ENDS_KEPT:
                self._early.popitem(last=False)
            return
        self._finish(placed, event)

    def _finish(self, placed: tuple[int, int, int, float], event: CallAttemptEnded | None) -> None:
        """Free the attempt's slot and store how it ended (None: lost, no end heard)."""
        campaign, number, attempt, _ = placed
        self._in_flight.get(campaign, set()).discard(number)
        task = asyncio.create_task(self._ended(campaign, number, attempt, event))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        self._wake.set()

    async def _ended(
        self, campaign_id: int, number: int, attempt: int, event: CallAttemptEnded | None
    ) -> None:
        try:
            if event is None:  # lost: it may have been answered, so it is not dialled again
                await self._store.settle(number, "lost", "unknown", "unknown", None)
                return
            campaign = await self._store.campaign(campaign_id)
            retry = campaign.state in ("running", "paused")
            await self._settle(
                campaign_id, campaign.options, number, attempt, event.status, event.answered_by, retry
            )
        except Exception:
            logger.exception("campaign %d: an attempt's end could not be stored", campaign_id)

    async def _settle(
        self,
        campaign: int,
        options: CampaignOptions,
        number: int,
        attempt: int,
        status: str,
        answered_by: str,
        retryable: bool,
    ) -> None:
        retry_at = None
        outcome = status
        if status == "completed":
            outcome = answered_by
        elif status in RETRIED_STATUSES and retryable and attempt < options.max_attempts:
            retry_at = self._clock() + options.retry_delay(attempt)
        await self._store.settle(number, status, answered_by, outcome, retry_at)
        self._wake.set()

    async def status(self, campaign: Campaign) -> dict[str, Any]:
        """One campaign's progress, as `campaign status` shows it."""
        progress = await self._store.progress(campaign.id)
        states, outcomes = progress["numbers"], progress["outcomes"]
        remaining = sum(states.get(s, 0) for s in ("pending", "dialling", "in_call"))
        settled = sum(states.get(s, 0) for s in ("done", "failed", "skipped"))
        elapsed = max(0.0, self._clock() - campaign.created_at)
        eta = round(remaining * elapsed / settled) if settled and campaign.state == "running" else None
        options = campaign.options
        return {
            "id": campaign.id,
            "name": campaign.name,
            "state": campaign.state,
            "options": {
                "concurrency": options.concurrency,
                "rate_per_minute": options.rate_per_minute,
                "hours": f"{options.hours.start}-{options.hours.end}",
                "tz": options.hours.zone,
                "max_attempts": options.max_attempts,
            },
            "in_hours": options.hours.is_open(self._clock()),
            "numbers": sum(states.values()),
            "dialled": progress["attempts"],
            "in_flight": self.in_flight(campaign.id),
            "answered": outcomes.get("human", 0) + outcomes.get("machine", 0) + outcomes.get("unknown", 0),
            "human": outcomes.get("human", 0),
            "machine": outcomes.get("machine", 0),
            "failed": states.get("failed", 0),
            "skipped": states.get("skipped", 0),
            "remaining": remaining,
            "outcomes": outcomes,
            "eta_s": eta,
        }
