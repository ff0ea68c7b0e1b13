"""What the gate learned of a call before its audio stream connected: the webhook's numbers, the budget's
minutes, or its refusal. Kept in this process, or also in Redis, so that the stream finds them on
whichever node it arrives: behind a balancer, Exotel's Passthru, its Voicebot applet's webhook and the
stream may each reach a different daemon.

The shared kind keeps a call's facts in one hash, `{prefix}:call:{sid}`, that expires with the
pending-call TTL; the stream takes it in one transaction, so two streams, on any nodes, cannot both take
one budget. While Redis cannot be reached a fact is kept in this process instead (counted, logged once):
a call whose webhook and stream reach the same node still gets its numbers, budget and refusal.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from voicebridge.cluster.keys import ClusterKeys
from voicebridge.cluster.outage import UNREACHABLE, Outage
from voicebridge.telephony.sids import is_valid_number

if TYPE_CHECKING:
    from redis.asyncio import Redis

PENDING_TTL_S = 300.0
# Denials and budget caps are kept for this many recent calls: a stream arrives seconds after its webhook.
DECISIONS_KEPT = 1000
# Numbers and reasons read back from Redis are cut to this: another node wrote them, but from a webhook.
MAX_FACT_CHARS = 200
TAKEN_FIELDS = ("from", "to", "provider", "minutes")
V = TypeVar("V")


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


class CallFacts(Protocol):
    """The gate's memory of calls whose stream has not come yet."""

    async def remember_pending(self, pending: PendingCall) -> None:
        """A webhook announced this call (its numbers and provider)."""
        ...

    async def allow_minutes(self, call_sid: str, minutes: float) -> None:
        """The budget's cap for this call."""
        ...

    async def deny(self, call_sid: str, reason: str) -> None:
        """This call was refused at the gate: its stream is refused too."""
        ...

    async def denied(self, call_sid: str) -> str | None:
        """Why this call was refused at the gate, or None."""
        ...

    async def take_pending(self, call_sid: str) -> PendingCall | None:
        """The webhook's view of a call whose stream just started (numbers and minutes), used up."""
        ...


class LocalCallFacts:
    """The facts in this process's memory: one daemon, or no `[cluster] redis_url`."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingCall] = {}
        self._denied: OrderedDict[str, str] = OrderedDict()
        self._allowed_minutes: OrderedDict[str, float] = OrderedDict()

    async def remember_pending(self, pending: PendingCall) -> None:
        now = time.monotonic()
        for sid in [sid for sid, p in self._pending.items() if now - p.created > PENDING_TTL_S]:
            del self._pending[sid]
        self._pending[pending.call_sid] = pending

    async def allow_minutes(self, call_sid: str, minutes: float) -> None:
        _keep(self._allowed_minutes, call_sid, minutes)

    async def deny(self, call_sid: str, reason: str) -> None:
        _keep(self._denied, call_sid, reason)

    async def denied(self, call_sid: str) -> str | None:
        return self._denied.get(call_sid)

    async def take_pending(self, call_sid: str) -> PendingCall | None:
        pending = self._pending.pop(call_sid, None)
        minutes = self._allowed_minutes.pop(call_sid, None)
        if pending is None and minutes is not None:
            pending = PendingCall(call_sid)
        if pending is not None and minutes is not None:
            pending.minutes_left = minutes
        return pending


class SharedCallFacts:
    """The facts in this process and in Redis, for every node with the same `cluster.key_prefix`."""

    def __init__(
        self, redis: Redis, keys: ClusterKeys, node_id: str, on_unreachable: Callable[[], None]
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._node_id = node_id
        self._local = LocalCallFacts()
        self._outage = Outage(
            "call facts kept on this node only", "call facts shared between nodes", on_unreachable
        )

    async def _write(self, call_sid: str, fields: dict[str, str]) -> bool:
        """Add to the call's hash; False when Redis could not be reached."""
        key = self._keys.call(call_sid)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, int(PENDING_TTL_S * 1000))
                await pipe.execute()
        except UNREACHABLE as exc:
            self._outage.failed(exc)
            return False
        self._outage.succeeded()
        return True

    async def remember_pending(self, pending: PendingCall) -> None:
        fields = {"from": pending.from_number, "to": pending.to_number, "provider": pending.provider}
        if not await self._write(pending.call_sid, fields):
            await self._local.remember_pending(pending)

    async def allow_minutes(self, call_sid: str, minutes: float) -> None:
        if not await self._write(call_sid, {"minutes": repr(float(minutes))}):
            await self._local.allow_minutes(call_sid, minutes)

    async def deny(self, call_sid: str, reason: str) -> None:
        if not await self._write(call_sid, {"denied": reason}):
            await self._local.deny(call_sid, reason)

    async def denied(self, call_sid: str) -> str | None:
        if (reason := await self._local.denied(call_sid)) is not None:
            return reason
        try:
            raw = await self._redis.hget(self._keys.call(call_sid), "denied")
        except UNREACHABLE as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        return _text(raw) if raw is not None else None

    async def take_pending(self, call_sid: str) -> PendingCall | None:
        local = await self._local.take_pending(call_sid)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._keys.call(call_sid))
                # Everything but a refusal is used up; the refusal stays (with the hash's expiry) for
                # the stream's own check that follows, and for any other stream with this sid.
                pipe.hdel(self._keys.call(call_sid), *TAKEN_FIELDS)
                # The call is here now: it counts in this node's heartbeat, no longer as one placed on it.
                pipe.zrem(self._keys.placing(self._node_id), call_sid)
                shared, _, _ = await pipe.execute()
        except UNREACHABLE as exc:
            self._outage.failed(exc)
            return local
        self._outage.succeeded()
        return _merged(call_sid, local, {_text(k): _text(v) for k, v in shared.items()})


def _merged(call_sid: str, local: PendingCall | None, shared: dict[str, str]) -> PendingCall | None:
    """This node's facts, completed from what the other nodes learned."""
    if not shared:
        return local
    pending = local or PendingCall(call_sid, provider=shared.get("provider", "exotel")[:16])
    pending.from_number = pending.from_number or _number(shared.get("from", ""))
    pending.to_number = pending.to_number or _number(shared.get("to", ""))
    if pending.minutes_left is None and (minutes := _minutes(shared.get("minutes"))) is not None:
        pending.minutes_left = minutes
    return pending


def _number(raw: str) -> str:
    """A From/To as another node wrote it; one no webhook could have carried is none."""
    return raw if is_valid_number(raw) else ""


def _minutes(raw: str | None) -> float | None:
    """A budget's minutes as another node wrote them; anything but a finite positive number is none."""
    try:
        minutes = float(raw) if raw is not None else None
    except ValueError:
        return None
    return minutes if minutes is not None and math.isfinite(minutes) and minutes > 0 else None


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text[:MAX_FACT_CHARS]


def _keep(table: OrderedDict[str, V], key: str, value: V) -> None:
    """table[key] = value; the oldest beyond DECISIONS_KEPT go."""
    table[key] = value
    while len(table) > DECISIONS_KEPT:
        table.popitem(last=False)
