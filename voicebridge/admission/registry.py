"""Live calls, capacity and drain: the one implementation behind the management API and control socket."""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

PENDING_TTL_S = 300.0
FINISHED_KEPT = 1000
# Webhook facts (callbacks, recording URLs, transfers) are kept for this many recent sids; the outbox
# holds the durable copy, and a daemon running for months must not keep one entry per call it ever saw.
FACTS_KEPT = 2 * FINISHED_KEPT
V = TypeVar("V")
# E.164-ish: an optional +, then 3 to 16 digits. Transfer targets outside this are refused.
PHONE_NUMBER = re.compile(r"^\+?[0-9]{3,16}$")


class UnknownCall(LookupError):
    """No live call has that sid."""


class InvalidNumber(ValueError):
    """A transfer target that is not a phone number."""


@dataclass(slots=True)
class PendingCall:
    """A call announced by a webhook whose audio stream has not connected yet."""

    call_sid: str
    from_number: str = ""
    to_number: str = ""
    provider: str = "exotel"
    created: float = field(default_factory=time.monotonic)
    # From the budget check: the call is ended politely when these run out.
    minutes_left: float | None = None


@dataclass(slots=True)
class CallRecord:
    """What is kept of a call after it ended."""

    call_sid: str
    provider: str
    from_number: str
    to_number: str
    started_at: float
    ended_at: float
    duration_s: float
    turns: int
    outcome: str
    transcript: list[dict[str, Any]]
    status_callbacks: list[dict[str, str]] = field(default_factory=list)
    recording_url: str = ""
    transfer_to: str = ""
    local_recording: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LiveCall(Protocol):
    """What the registry needs of a live call."""

    call_sid: str

    def snapshot(self) -> dict[str, Any]: ...

    async def hangup(self) -> None: ...

    async def transfer(self, number: str) -> None: ...

    async def end_for_shutdown(self) -> None: ...


class CallRegistry:
    """Tracks every call of this process from webhook to record; enforces capacity and draining."""

    def __init__(self, max_concurrent_calls: int, load_refusal: Callable[[], str] | None = None) -> None:
        self.capacity = max_concurrent_calls
        self._load_refusal = load_refusal
        self.draining = False
        self._pending: dict[str, PendingCall] = {}
        self._active: dict[str, LiveCall] = {}
        self._finished: OrderedDict[str, CallRecord] = OrderedDict()
        self._callbacks: OrderedDict[str, dict[str, dict[str, str]]] = OrderedDict()
        self._recordings: OrderedDict[str, str] = OrderedDict()
        self._transfers: OrderedDict[str, str] = OrderedDict()
        self._changed = asyncio.Event()
        self.started = time.monotonic()
        self._denied: OrderedDict[str, str] = OrderedDict()
        self._allowed_minutes: OrderedDict[str, float] = OrderedDict()
        self._recent_calls: dict[str, deque[float]] = {}
        self.finished_total = 0
        # Teardowns under way: each is a task of its own that its callers may stop waiting for, so the
        # daemon's shutdown waits for them here, or the loop would destroy them pending, records and all.
        self._teardowns: set[asyncio.Future[None]] = set()

    # --- admission -------------------------------------------------------------------------------

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

    def register_pending(self, pending: PendingCall) -> None:
        """Remember a call a webhook announced, so its stream can be matched to From/To."""
        now = time.monotonic()
        for sid in [sid for sid, p in self._pending.items() if now - p.created > PENDING_TTL_S]:
            del self._pending[sid]
        self._pending[pending.call_sid] = pending

    def take_pending(self, call_sid: str) -> PendingCall | None:
        """The webhook's view of a call whose stream just started, if there was one."""
        pending = self._pending.pop(call_sid, None)
        minutes = self._allowed_minutes.pop(call_sid, None)
        if pending is None and minutes is not None:
            pending = PendingCall(call_sid)
        if pending is not None and minutes is not None:
            pending.minutes_left = minutes
        return pending

    def deny(self, call_sid: str, reason: str) -> None:
        """Remember that a call was refused at the gate, so its stream is refused too."""
        self._denied[call_sid] = reason
        while len(self._denied) > FINISHED_KEPT:
            self._denied.popitem(last=False)

    def allow_minutes(self, call_sid: str, minutes: float) -> None:
        """The budget's cap for a call that has not connected its stream yet."""
        self._allowed_minutes[call_sid] = minutes
        while len(self._allowed_minutes) > FINISHED_KEPT:
            self._allowed_minutes.popitem(last=False)

    def denied(self, call_sid: str) -> str | None:
        """Why this call was refused at the gate, or None."""
        return self._denied.get(call_sid)

    def within_rate_limit(self, from_number: str, limit: int, window_s: float) -> bool:
        """Count a call from `from_number`; False when it is over `limit` calls in the last `window_s`."""
        if limit <= 0 or not from_number:
            return True
        now = time.monotonic()
        recent = self._recent_calls.setdefault(from_number, deque())
        while recent and now - recent[0] > window_s:
            recent.popleft()
        if len(recent) >= limit:
            return False
        recent.append(now)
        # Forget callers quiet for a whole window so the table cannot grow without bound.
        for number in [n for n, times in self._recent_calls.items() if now - times[-1] > window_s]:
            del self._recent_calls[number]
        return True

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
        record.status_callbacks = list(self._callbacks.get(record.call_sid, {}).values())
        record.recording_url = self._recordings.get(record.call_sid, record.recording_url)
        record.transfer_to = self._transfers.get(record.call_sid, record.transfer_to)
        self._finished[record.call_sid] = record
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

    # --- webhook facts, idempotent by call sid ---------------------------------------------------

    def record_callback(self, call_sid: str, kind: str, fields: dict[str, str], dedupe_key: str = "") -> bool:
        """Keep a callback once per `dedupe_key` (the outbox's key for it), else per (kind, status); False
        when it was a retry."""
        key = dedupe_key or (
            f"{kind}:{fields.get('Status') or fields.get('EventType') or fields.get('RecordingUrl', '')}"
        )
        seen = _remember(self._callbacks, call_sid, {})
        if key in seen:
            return False
        seen[key] = {"kind": kind, **fields}
        if kind == "recording" and fields.get("RecordingUrl"):
            _remember(self._recordings, call_sid, fields["RecordingUrl"], replace=True)
        finished = self._finished.get(call_sid)
        if finished is not None:
            finished.status_callbacks = list(seen.values())
            finished.recording_url = self._recordings.get(call_sid, finished.recording_url)
        return True

    def callbacks(self, call_sid: str) -> list[dict[str, str]]:
        return list(self._callbacks.get(call_sid, {}).values())

    def set_transfer(self, call_sid: str, number: str) -> None:
        _remember(self._transfers, call_sid, number, replace=True)

    def transfer_destination(self, call_sid: str) -> str | None:
        """Where the Connect applet should dial for this call, if we transferred it."""
        return self._transfers.get(call_sid)

    # --- the operations both management doors offer ----------------------------------------------

    def list_active(self) -> list[dict[str, Any]]:
        """A snapshot of every live call."""
        return [call.snapshot() for call in self._active.values()]

    def show(self, call_sid: str) -> dict[str, Any]:
        """One call, live or recently finished."""
        if call := self._active.get(call_sid):
            return call.snapshot()
        if record := self._finished.get(call_sid):
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
        return self._finished.get(call_sid)

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


def _remember(table: OrderedDict[str, V], key: str, value: V, replace: bool = False) -> V:
    """table[key] (set to `value` if new or `replace`), newest last; the oldest beyond FACTS_KEPT go."""
    if replace or key not in table:
        table[key] = value
    table.move_to_end(key)
    while len(table) > FACTS_KEPT:
        table.popitem(last=False)
    return table[key]
