"""Live calls, capacity and drain: the one implementation behind the management API and control socket.

Who may call at all (rate limit, budget, denials, calls announced by a webhook) is the gate's
(admission/gate.py); what providers reported about calls (callbacks, recordings, transfers) is kept by
records/provider_facts.py and attached to a call's record when it is shown.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from voicebridge.outbound.dialer import AnsweredBy
from voicebridge.records.call_records import CallRecord
from voicebridge.records.provider_facts import ProviderFacts

FINISHED_KEPT = 1000
# E.164-ish: an optional +, then 3 to 16 digits. Transfer targets outside this are refused.
PHONE_NUMBER = re.compile(r"^\+?[0-9]{3,16}$")


class UnknownCall(LookupError):
    """No live call has that sid."""


class InvalidNumber(ValueError):
    """A transfer target that is not a phone number."""


class LiveCall(Protocol):
    """What the registry needs of a live call."""

    call_sid: str

    def snapshot(self) -> dict[str, Any]: ...

    async def hangup(self) -> None: ...

    async def transfer(self, number: str) -> None: ...

    async def end_for_shutdown(self) -> None: ...


@runtime_checkable
class AnsweredCall(Protocol):
    """A live call that can take the provider's answering-machine verdict (call/answering.py)."""

    def provider_answered(self, answered_by: AnsweredBy) -> None: ...


class CallRegistry:
    """Tracks every call of this process from admission to record; enforces capacity and draining."""

    def __init__(
        self,
        max_concurrent_calls: int,
        load_refusal: Callable[[], str] | None = None,
        facts: ProviderFacts | None = None,
    ) -> None:
        self.capacity = max_concurrent_calls
        self._load_refusal = load_refusal
        # What providers said about calls; attached to a call's record when it ends and when it is shown.
        self.facts = facts if facts is not None else ProviderFacts()
        self.draining = False
        self._active: dict[str, LiveCall] = {}
        self._finished: OrderedDict[str, CallRecord] = OrderedDict()
        self._changed = asyncio.Event()
        self.started = time.monotonic()
        self.finished_total = 0
        # Teardowns under way: each is a task of its own that its callers may stop waiting for, so the
        # daemon's shutdown waits for them here, or the loop would destroy them pending, records and all.
        self._teardowns: set[asyncio.Future[None]] = set()

    # --- live calls: room for one more, admitting, finishing -------------------------------------

    @property
    def active_count(self) -> int:
        return len(self._active)

    def refusal(self) -> str:
        """Why a new call would be refused now: "draining", "capacity", "overloaded"; "" to admit it."""
        if self.draining:
            return "draining"
        if len(self._active) >= self.capacity:
            return "capacity"
        return self._load_refusal() if self._load_refusal is not None else ""

    def has_capacity(self) -> bool:
        """True when a new call may be admitted now."""
        return not self.refusal()

    def admit(self, call: LiveCall) -> bool:
        """Add a live call if there is room; False means refuse it."""
        if self.refusal() or call.call_sid in self._active:
            return False
        self._active[call.call_sid] = call
        self._changed.set()
        return True

    def finish(self, call: LiveCall, record: CallRecord) -> None:
        """Move a call from live to finished, attaching what webhooks said about it."""
        if self._active.get(call.call_sid) is call:
            del self._active[call.call_sid]
        self._finished[record.call_sid] = self.facts.attach(record)
        self.finished_total += 1
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)
        self._changed.set()

    def track_teardown(self, teardown: asyncio.Future[None]) -> None:
        """Keep a call's teardown until it is done, so that `settle` can wait for it."""
        self._teardowns.add(teardown)
        teardown.add_done_callback(self._teardowns.discard)

    async def settle(self) -> None:
        """Wait for every teardown under way (each bounds its own waits), including ones started meanwhile."""
        while self._teardowns:
            # asyncio.wait, not gather: a cancelled settle leaves the teardowns running.
            await asyncio.wait(set(self._teardowns))

    # --- the operations both management doors offer ----------------------------------------------

    def active_sids(self) -> list[str]:
        """The live calls' sids (the cluster's call directory)."""
        return list(self._active)

    def list_active(self) -> list[dict[str, Any]]:
        """A snapshot of every live call."""
        return [call.snapshot() for call in self._active.values()]

    def provider_answered(self, call_sid: str, answered_by: AnsweredBy) -> bool:
        """The provider's AnsweredBy ("human" | "machine" | "unknown") for a live outbound call, from the
        dialler's webhook: it overrides our detector's verdict. False when no live call has that sid."""
        call = self._active.get(call_sid)
        if not isinstance(call, AnsweredCall):
            return False
        call.provider_answered(answered_by)
        return True

    def show(self, call_sid: str) -> dict[str, Any]:
        """One call, live or recently finished."""
        if call := self._active.get(call_sid):
            return call.snapshot()
        if record := self.finished(call_sid):
            return {**record.as_dict(), "state": "ended"}
        raise UnknownCall(call_sid)

    async def hangup(self, call_sid: str) -> None:
        """End a live call."""
        call = self._active.get(call_sid)
        if call is None:
            raise UnknownCall(call_sid)
        await call.hangup()

    async def transfer(self, call_sid: str, number: str) -> None:
        """Hand a live call to a human at `number`."""
        if not PHONE_NUMBER.match(number):
            raise InvalidNumber(f"{number!r} is not a phone number (expected like +919876543210)")
        call = self._active.get(call_sid)
        if call is None:
            raise UnknownCall(call_sid)
        await call.transfer(number)  # which names the destination, if the transfer goes ahead

    def status(self) -> dict[str, Any]:
        """Counts for health output and the control socket."""
        return {
            "active_calls": len(self._active),
            "capacity": self.capacity,
            "draining": self.draining,
            "finished_calls_kept": len(self._finished),
            "uptime_s": round(time.monotonic() - self.started, 1),
        }

    def finished(self, call_sid: str) -> CallRecord | None:
        """A recently finished call's record, with what providers have said about it so far."""
        record = self._finished.get(call_sid)
        return self.facts.attach(record) if record is not None else None

    # --- drain -----------------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Stop admitting calls, wait up to `timeout` for live ones to end, then end the rest politely."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while self._active and (remaining := deadline - time.monotonic()) > 0:
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                break
        leftovers = list(self._active.values())
        if leftovers:
            await asyncio.gather(*(call.end_for_shutdown() for call in leftovers), return_exceptions=True)
        await self.settle()
