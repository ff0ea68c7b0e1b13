"""Which node serves a new call: the one whose webhook the balancer chose, or, with `server.node_url` on
the nodes, the least loaded live node with room, whose address goes into the stream URL handed out.

Heartbeats say each node's load, but only every `cluster.heartbeat_s`: a burst of webhooks between two
beats would all see the same figures and pick the same node. So placing a call also reserves it on the
chosen node (a sorted set of the calls placed there whose stream has not arrived), in one script with
the choice, and a node's load is its live calls plus its reservations. A reservation ends when the stream
arrives (cluster/facts.py takes it with the call's facts) or after `cluster.node_ttl_s`, for a stream that
never came. Equally loaded nodes take turns: the tie goes to the node placed on least so far.

Without Redis, or while it is unreachable, this node serves the call itself: placement is an
optimisation, never a reason to refuse a caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from voicebridge.admission.registry import CallRegistry
from voicebridge.cluster.keys import ClusterKeys
from voicebridge.cluster.nodes import NodeDirectory, NodeState
from voicebridge.cluster.outage import UNREACHABLE, Outage

if TYPE_CHECKING:
    from redis.asyncio import Redis

# KEYS: the placed-count hash, then each candidate's reservations. ARGV: the call sid, the reservation's
# life in seconds, then per candidate its node id, live calls and capacity. Returns the 1-based index of
# the node chosen (its reservation made), or 0 when none has room.
_PLACE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local life = tonumber(ARGV[2])
local best, best_load, best_placed = 0, 0, 0
for i = 2, #KEYS do
  local at = 3 + (i - 2) * 3
  local node, active, capacity = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', t - life)
  local calls = active + redis.call('ZCARD', KEYS[i])
  if calls < capacity then
    local load = calls / capacity
    local placed = tonumber(redis.call('HGET', KEYS[1], node) or '0')
    if best == 0 or load < best_load or (load == best_load and placed < best_placed) then
      best, best_load, best_placed = i, load, placed
    end
  end
end
if best == 0 then
  return 0
end
redis.call('ZADD', KEYS[best], t, ARGV[1])
redis.call('PEXPIRE', KEYS[best], math.ceil(life * 1000))
redis.call('HINCRBY', KEYS[1], ARGV[3 + (best - 2) * 3], 1)
return best - 1
"""


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a call's stream is to connect: a node's id and its ws(s):// base ("" for this node's own)."""

    node_id: str
    base: str


class Placement(Protocol):
    """Chooses the node for a new call, and says whether any node would take one."""

    async def place(self, call_sid: str) -> Placed | None:
        """The node chosen, its reservation made; None: this node serves the call from its own address."""
        ...

    async def refusal(self) -> str:
        """Why no node would take a new call now ("capacity", "draining", "overloaded"), or ""."""
        ...


class LocalPlacement:
    """One node: every call is this node's, refused when this node would refuse it."""

    def __init__(self, registry: CallRegistry) -> None:
        self._registry = registry

    async def place(self, call_sid: str) -> Placed | None:
        return None

    async def refusal(self) -> str:
        return self._registry.refusal()


class SharedPlacement:
    """The least loaded node with room among those that publish a `server.node_url`."""

    def __init__(
        self,
        redis: Redis,
        keys: ClusterKeys,
        directory: NodeDirectory,
        registry: CallRegistry,
        reservation_s: float,
        on_unreachable: Callable[[], None],
        on_placed: Callable[[str], None],
    ) -> None:
        """`on_placed(node_id)` counts a call placed; `reservation_s` is how long a placed call counts
        on its node before its stream arrives (it may never)."""
        self._keys = keys
        self._on_placed = on_placed
        self._directory = directory
        self._registry = registry
        self._reservation_s = reservation_s
        self._script = redis.register_script(_PLACE)
        self._outage = Outage("calls served where their webhook came", "calls placed by load", on_unreachable)

    async def _candidates(self) -> list[NodeState]:
        """Live nodes with an address that would take a call, by their last heartbeat."""
        return [
            node
            for node in await self._directory.nodes()
            if node.node_url and not node.refusal and not node.draining and node.active_calls < node.capacity
        ]

    async def place(self, call_sid: str) -> Placed | None:
        try:
            candidates = await self._candidates()
            if not candidates:
                self._outage.succeeded()
                return None
            keys = [self._keys.placed] + [self._keys.placing(node.node_id) for node in candidates]
            args: list[str | int | float] = [call_sid, self._reservation_s]
            for node in candidates:
                args += [node.node_id, node.active_calls, node.capacity]
            chosen = int(await self._script(keys=keys, args=args))
        except UNREACHABLE as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        if not 1 <= chosen <= len(candidates):
            return None  # every node full: this one answers, and its stream hears the busy message
        node = candidates[chosen - 1]
        self._on_placed(node.node_id)
        return Placed(node.node_id, node.node_url)

    async def refusal(self) -> str:
        """This node's refusal only when no other node would take the call either."""
        own = self._registry.refusal()
        if not own:
            return ""
        try:
            others = [node for node in await self._candidates() if node.node_id != self._directory.node_id]
        except UNREACHABLE as exc:
            self._outage.failed(exc)
            return own
        self._outage.succeeded()
        return "" if others else own
