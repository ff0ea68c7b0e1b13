"""The shared state in the daemon: one Redis client, the caller rate limit on it, this node's heartbeat
and the node list on the management API, all started and closed by one cleanup context (server/app.py).

Without `[cluster] redis_url` the context only sets the in-process rate limit: nothing connects, no
task runs, no route exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from voicebridge.cluster.nodes import UNREACHABLE, NodeDirectory, describe, heartbeat
from voicebridge.cluster.rates import LocalCallerRates, SharedCallerRates
from voicebridge.config.schema import Settings
from voicebridge.server.keys import CALLER_RATES, CLUSTER_NODES, METRICS, REGISTRY, SETTINGS

logger = logging.getLogger("voicebridge.cluster")


def node_id(settings: Settings) -> str:
    """`cluster.node_id`, else <hostname>-<port> cut to the characters a node id may have."""
    if settings.cluster.node_id:
        return settings.cluster.node_id
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.") or "node"
    return f"{host[:50]}-{settings.server.port}"


async def shared_state(app: web.Application) -> AsyncIterator[None]:
    """The Redis client and what runs on it, when `[cluster] redis_url` is set."""
    settings = app[SETTINGS]
    cluster = settings.cluster
    if not cluster.enabled:
        app[CALLER_RATES] = LocalCallerRates()
        yield
        return
    from redis.asyncio import Redis

    redis = Redis.from_url(
        cluster.redis_url.get_secret_value(),
        socket_timeout=cluster.timeout_s,
        socket_connect_timeout=cluster.timeout_s,
    )
    unreachable = app[METRICS].cluster_unreachable
    me = node_id(settings)
    app[CALLER_RATES] = SharedCallerRates(
        redis, cluster.key_prefix, me, lambda: unreachable.labels(what="rate_limit").inc()
    )
    directory = app[CLUSTER_NODES] = NodeDirectory(redis, cluster, me)
    missed = unreachable.labels(what="heartbeat").inc
    beat = asyncio.create_task(heartbeat(directory, app[REGISTRY], cluster.heartbeat_s, missed))
    logger.info("cluster node %s, shared state at %s", me, _where(cluster.redis_url.get_secret_value()))
    yield
    beat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beat
    with contextlib.suppress(*UNREACHABLE):
        await directory.withdraw()
    await redis.aclose()


def _where(url: str) -> str:
    """The Redis server's host and port, never its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"


async def cluster_nodes(request: web.Request) -> web.Response:
    """Every node heard from within `cluster.node_ttl_s`, with its load and its live calls."""
    try:
        nodes = await request.app[CLUSTER_NODES].nodes()
    except UNREACHABLE as exc:
        request.app[METRICS].cluster_unreachable.labels(what="nodes").inc()
        logger.warning("shared state unreachable (%s): node list not read", type(exc).__name__)
        return web.json_response({"ok": False, "error": "shared state unreachable"}, status=503)
    return web.json_response({"node_id": request.app[CLUSTER_NODES].node_id, "nodes": describe(nodes)})


def add_cluster_routes(app: web.Application, settings: Settings) -> None:
    """The cluster's management route, only when the cluster is configured."""
    if settings.cluster.enabled:
        app.router.add_get("/api/cluster/nodes", cluster_nodes)
