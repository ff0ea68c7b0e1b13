"""Every Redis key and channel the nodes share, in one place: `cluster.key_prefix` then what it holds.

Nodes with the same prefix are one cluster; two clusters may share one Redis server with two prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    prefix: str

    def node(self, node_id: str) -> str:
        """A node's heartbeat: its load, capacity, address and live calls (expires after node_ttl_s)."""
        return f"{self.prefix}:node:{node_id}"

    @property
    def node_pattern(self) -> str:
        return f"{self.prefix}:node:*"

    def rate(self, caller_digest: str) -> str:
        """One caller's recent calls (a sorted set of times), for the shared rate limit."""
        return f"{self.prefix}:rate:{caller_digest}"

    def call(self, call_sid: str) -> str:
        """What the gate learned of a call before its stream came: numbers, budget minutes, a refusal."""
        return f"{self.prefix}:call:{call_sid}"

    def placing(self, node_id: str) -> str:
        """Calls placed on a node whose stream has not arrived yet (a sorted set by time placed)."""
        return f"{self.prefix}:placing:{node_id}"

    @property
    def placed(self) -> str:
        """Calls placed on each node since the cluster began: breaks ties between equally loaded nodes."""
        return f"{self.prefix}:placed"

    def operations(self, node_id: str) -> str:
        """The pub/sub channel a node takes operator requests on (hang up, transfer, show, list)."""
        return f"{self.prefix}:ops:{node_id}"

    def replies(self, node_id: str) -> str:
        """The pub/sub channel a node hears the answers to its own requests on."""
        return f"{self.prefix}:replies:{node_id}"
