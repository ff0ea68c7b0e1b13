"""This daemon's name among the nodes: in Redis keys, heartbeats, stream tokens and the node list."""

from __future__ import annotations

import re
import socket

from voicebridge.config.schema import Settings


def node_id(settings: Settings) -> str:
    """`cluster.node_id`, else <hostname>-<port> cut to the characters a node id may have."""
    if settings.cluster.node_id:
        return settings.cluster.node_id
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.") or "node"
    return f"{host[:50]}-{settings.server.port}"
