"""The shared state in the daemon, started and closed by one cleanup context (server/app.py): one Redis
client and what runs on it (the caller rate limit, the gate's facts of calls not yet streaming, the
choice of node for a new call, this node's heartbeat, operator actions routed to the node holding a
call) and the node list on the management API.

Without `[cluster] redis_url` the context sets the in-process kinds of the same things: nothing
connects, no task runs, no route exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from aiohttp import web

from voicebridge.cluster.facts import LocalCallFacts, SharedCallFacts
from voicebridge.cluster.identity import node_id
from voicebridge.cluster.keys import ClusterKeys
from voicebridge.cluster.nodes import NodeDirectory, describe, heartbeat
from voicebridge.cluster.operations import ClusterCallOperations, LocalCallOperations
from voicebridge.cluster.outage import UNREACHABLE
from voicebridge.cluster.placement import LocalPlacement, SharedPlacement
from voicebridge.cluster.rates import LocalCallerRates, SharedCallerRates
from voicebridge.cluster.routing import CallRouter
from voicebridge.config.schema import Settings
from voicebridge.server.keys import (
    CALL_FACTS,
    CALL_OPERATIONS,
    CALLER_RATES,
    CLUSTER_NODES,
    METRICS,
    PLACEMENT,
    REGISTRY,
    SETTINGS,
)

logger = logging.getLogger("voicebridge.cluster")


async def shared_state(app: web.Application) -> AsyncIterator[None]:
    """The Redis clients and what runs on them, when `[cluster] redis_url` is set."""
    settings = app[SETTINGS]
    cluster = settings.cluster
    registry = app[REGISTRY]
    if not cluster.enabled:
        app[CALLER_RATES] = LocalCallerRates()
        app[CALL_FACTS] = LocalCallFacts()
        app[PLACEMENT] = LocalPlacement(registry)
        app[CALL_OPERATIONS] = LocalCallOperations(registry)
        yield
        return
    from redis.asyncio import Redis

    url = cluster.redis_url.get_secret_value()
    timeout = cluster.timeout_s
    redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    # The subscription waits on its connection for as long as the daemon runs: no read timeout there.
    listener = Redis.from_url(url, socket_connect_timeout=timeout, health_check_interval=30)
    metrics = app[METRICS]
    unreachable = metrics.cluster_unreachable
    me, keys = node_id(settings), ClusterKeys(cluster.key_prefix)
    app[CALLER_RATES] = SharedCallerRates(
        redis, cluster.key_prefix, me, unreachable.labels(what="rate_limit").inc
    )
    app[CALL_FACTS] = SharedCallFacts(redis, keys, me, unreachable.labels(what="call_facts").inc)
    directory = app[CLUSTER_NODES] = NodeDirectory(redis, cluster, me, settings.server.node_url)
    app[PLACEMENT] = SharedPlacement(
        redis,
        keys,
        directory,
        registry,
        cluster.node_ttl_s,
        unreachable.labels(what="placement").inc,
        lambda node: metrics.calls_placed.labels(node=node).inc(),
    )
    router = CallRouter(
        listener,
        keys,
        me,
        registry,
        unreachable.labels(what="routing").inc,
        lambda reason: metrics.cluster_refusals.labels(reason=reason).inc(),
    )
    app[CALL_OPERATIONS] = ClusterCallOperations(registry, directory, router)
    tasks = [
        asyncio.create_task(
            heartbeat(directory, registry, cluster.heartbeat_s, unreachable.labels(what="heartbeat").inc)
        ),
        asyncio.create_task(router.run()),
    ]
    logger.info("cluster node %s, shared state at %s", me, _where(url))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with contextlib.suppress(*UNREACHABLE):
        await directory.withdraw()
    await listener.aclose()
    await redis.aclose()


def _where(url: str) -> str:
    """The Redis server's host and port, never its password."""
    parts = urlsplit(url)
    return parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"


async def cluster_nodes(request: web.Request) -> web.Response:
    """Every node heard from within `cluster.node_ttl_s`, with its load, address and live calls."""
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
