"""Which daemons are up, how loaded they are, where their streams are reached and which calls each holds:
one expiring key per node.

Every `cluster.heartbeat_s` a node writes `{prefix}:node:{node_id}` with its load, its `server.node_url`
and its live calls' sids, to expire after `cluster.node_ttl_s`. A node that dies (SIGKILL, a lost
machine) stops writing, and its key, with its calls, is gone from the list within the TTL: there is no
"remove me" step that a crash could skip. Reading the list is a SCAN of those keys; values written by
other nodes are parsed as untrusted JSON and anything not of the shape below is left out.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from voicebridge.admission.registry import CallRegistry
from voicebridge.cluster.keys import ClusterKeys
from voicebridge.cluster.outage import UNREACHABLE, Outage
from voicebridge.config.cluster import ClusterConfig
from voicebridge.config.section import stream_base_fault

if TYPE_CHECKING:
    from redis.asyncio import Redis

# A node's call list in its heartbeat; beyond this (a node far over any sane capacity) it is cut.
MAX_CALLS_LISTED = 2000
MAX_URL_CHARS = 300


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
    # Where the node's audio sockets are reached (ws:// or wss://, no path): "" when it takes no placed calls.
    node_url: str = ""

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
        node_url = doc.get("node_url", "")
        # Handed to the providers as the stream's address: a node that names anything else takes no calls.
        if not isinstance(node_url, str) or len(node_url) > MAX_URL_CHARS or stream_base_fault(node_url):
            node_url = ""
        try:
            node = cls(
                node_id=str(doc["node_id"])[:64],
                active_calls=int(doc["active_calls"]),
                capacity=int(doc["capacity"]),
                draining=bool(doc["draining"]),
                refusal=str(doc.get("refusal", ""))[:32],
                calls=[sid[:64] for sid in calls[:MAX_CALLS_LISTED]],
                at=float(doc.get("at", 0.0)),
                node_url=node_url,
            )
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: int(Infinity)
            return None
        return node if math.isfinite(node.at) else None


class NodeDirectory:
    """This node's heartbeat, and every live node's last one."""

    def __init__(self, redis: Redis, config: ClusterConfig, node_id: str, node_url: str = "") -> None:
        """`node_url`: this node's stream address as the providers reach it (`server.node_url`, ws/wss)."""
        self._redis = redis
        self._config = config
        self._keys = ClusterKeys(config.key_prefix)
        self.node_id = node_id
        self.node_url = node_url

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
            node_url=self.node_url,
        )
        ttl_ms = int(self._config.node_ttl_s * 1000)
        await self._redis.set(self._keys.node(self.node_id), json.dumps(asdict(state)), px=ttl_ms)

    async def withdraw(self) -> None:
        """Leave the list at once (a clean shutdown); a crashed node leaves when its key expires."""
        await self._redis.delete(self._keys.node(self.node_id))

    async def nodes(self) -> list[NodeState]:
        """Every node heard from within the TTL, by node id."""
        keys = [key async for key in self._redis.scan_iter(match=self._keys.node_pattern, count=500)]
        values = await self._redis.mget(keys) if keys else []
        found = [state for raw in values if (state := NodeState.parse(raw)) is not None]
        return sorted(found, key=lambda node: node.node_id)


async def heartbeat(
    directory: NodeDirectory, registry: CallRegistry, every_s: float, on_unreachable: Callable[[], None]
) -> None:
    """Publish this node's state every `every_s` until cancelled; an outage is logged once and counted."""
    outage = Outage("node heartbeat not written", "node heartbeat written", on_unreachable)
    while True:
        try:
            await directory.publish(registry)
        except UNREACHABLE as exc:
            outage.failed(exc)
        else:
            outage.succeeded()
        await asyncio.sleep(every_s)


def describe(nodes: list[NodeState]) -> list[dict[str, Any]]:
    """The nodes as the management API shows them."""
    now = time.time()
    return [asdict(node) | {"seen_s_ago": round(max(0.0, now - node.at), 1)} for node in nodes]
