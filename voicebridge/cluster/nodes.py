"""Which daemons are up, how loaded they are and which calls each holds: one expiring key per node.

Every `cluster.heartbeat_s` a node writes `{prefix}:node:{node_id}` with its load and its live calls'
sids, to expire after `cluster.node_ttl_s`. A node that dies (SIGKILL, a lost machine) stops writing,
and its key, with its calls, is gone from the list within the TTL: there is no "remove me" step that a
crash could skip. Reading the list is a SCAN of those keys; values written by other nodes are parsed
as untrusted JSON and anything not of the shape below is left out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from voicebridge.admission.registry import CallRegistry
from voicebridge.config.cluster import ClusterConfig

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("voicebridge.cluster")

# A node's call list in its heartbeat; beyond this (a node far over any sane capacity) it is cut.
MAX_CALLS_LISTED = 2000
UNREACHABLE = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node as its last heartbeat described it."""

    node_id: str
    active_calls: int
    capacity: int
    draining: bool
    refusal: str  # why it would refuse a new call now ("capacity", "overloaded", "draining"), or ""
    calls: list[str] = field(default_factory=list)
    at: float = 0.0  # the node's wall clock when it wrote this

    @classmethod
    def parse(cls, raw: bytes | str | None) -> NodeState | None:
        """A heartbeat value, or None when it is not one."""
        try:
            doc = json.loads(raw) if raw is not None else None
        except (ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        calls = doc.get("calls", [])
        if not isinstance(calls, list) or not all(isinstance(sid, str) for sid in calls):
            return None
        try:
            node = cls(
                node_id=str(doc["node_id"])[:64],
                active_calls=int(doc["active_calls"]),
                capacity=int(doc["capacity"]),
                draining=bool(doc["draining"]),
                refusal=str(doc.get("refusal", ""))[:32],
                calls=[sid[:64] for sid in calls[:MAX_CALLS_LISTED]],
                at=float(doc.get("at", 0.0)),
            )
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: int(Infinity)
            return None
        return node if math.isfinite(node.at) else None


class NodeDirectory:
    """This node's heartbeat, and every live node's last one."""

    def __init__(self, redis: Redis, config: ClusterConfig, node_id: str) -> None:
        self._redis = redis
        self._config = config
        self.node_id = node_id
        self._key_pattern = f"{config.key_prefix}:node:*"

    def _key(self, node_id: str) -> str:
        return f"{self._config.key_prefix}:node:{node_id}"

    async def publish(self, registry: CallRegistry) -> None:
        """Write this node's state, to expire unless written again within the TTL."""
        status = registry.status()
        calls = registry.active_sids()[:MAX_CALLS_LISTED]
        state = NodeState(
            node_id=self.node_id,
            active_calls=int(status["active_calls"]),
            capacity=int(status["capacity"]),
            draining=bool(status["draining"]),
            refusal=registry.refusal(),
            calls=calls,
            at=time.time(),
        )
        ttl_ms = int(self._config.node_ttl_s * 1000)
        await self._redis.set(self._key(self.node_id), json.dumps(asdict(state)), px=ttl_ms)

    async def withdraw(self) -> None:
        """Leave the list at once (a clean shutdown); a crashed node leaves when its key expires."""
        await self._redis.delete(self._key(self.node_id))

    async def nodes(self) -> list[NodeState]:
        """Every node heard from within the TTL, by node id."""
        keys = [key async for key in self._redis.scan_iter(match=self._key_pattern, count=500)]
        values = await self._redis.mget(keys) if keys else []
        found = [state for raw in values if (state := NodeState.parse(raw)) is not None]
        return sorted(found, key=lambda node: node.node_id)


async def heartbeat(
    directory: NodeDirectory, registry: CallRegistry, every_s: float, on_unreachable: Callable[[], None]
) -> None:
    """Publish this node's state every `every_s` until cancelled; an outage is logged once and counted."""
    down = False
    while True:
        try:
            await directory.publish(registry)
        except UNREACHABLE as exc:
            on_unreachable()
            if not down:
                reason = type(exc).__name__
                logger.warning("shared state unreachable (%s): node heartbeat not written", reason)
            down = True
        else:
            if down:
                logger.info("shared state reachable again: node heartbeat written")
            down = False
        await asyncio.sleep(every_s)


def describe(nodes: list[NodeState]) -> list[dict[str, Any]]:
    """The nodes as the management API shows them."""
    now = time.time()
    return [asdict(node) | {"seen_s_ago": round(max(0.0, now - node.at), 1)} for node in nodes]
