"""Issue 19, item 2, over the wire: three real daemons sharing a real redis-server. The per-caller limit
holds across them, every node lists every node with its live calls, and a node killed with SIGKILL drops
out of the list within 10 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.sim.redis_server import RedisServer, start_redis_server

pytestmark = pytest.mark.e2e

CALLER = "+919811111111"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RedisServer, list[DaemonProcess]]]:
    redis = start_redis_server(tmp_path / "redis")
    daemons: list[DaemonProcess] = []
    try:
        for number in (1, 2, 3):
            overrides: dict[str, dict[str, Any]] = {
                "prompts": {"greeting": "Hello."},
                "calls": {"rate_limit_calls": 2, "rate_limit_window_s": 600},
                "cluster": {
                    "redis_url": redis.url,
                    "node_id": f"node-{number}",
                    "heartbeat_s": 1.0,
                    "node_ttl_s": 3.0,
                },
            }
            daemons.append(start_daemon(tmp_path / f"node-{number}", overrides))
        yield redis, daemons
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.terminate()
        redis.stop()


async def passthru(daemon: DaemonProcess, call_sid: str, from_number: str) -> int:
    form = {"CallSid": call_sid, "From": from_number, "To": "+918000000002"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.http}/webhooks/exotel/passthru", data=form, allow_redirects=False) as response,
    ):
        return response.status


async def nodes_seen_by(daemon: DaemonProcess) -> dict[str, list[str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.http}/api/cluster/nodes") as response,
    ):
        assert response.status == 200, await response.text()
        body = await response.json()
    return {node["node_id"]: node["calls"] for node in body["nodes"]}


async def until(check: Any, timeout: float) -> float:
    """Seconds until `check()` (a coroutine function) is true; fails after `timeout`."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def test_three_nodes_share_the_caller_limit_and_the_node_list(
    cluster: tuple[RedisServer, list[DaemonProcess]],
) -> None:
    _, (one, two, three) = cluster
    # Two calls from one number are allowed, on different nodes; the third is refused by the third node,
    # which has never seen this caller itself. Another caller is not affected.
    statuses = [await passthru(node, f"CA-rate-{n}", CALLER) for n, node in enumerate((one, two, three))]
    assert statuses == [200, 200, 302]
    assert await passthru(three, "CA-rate-x", "+919822222222") == 200

    async def all_three() -> bool:
        return set(await nodes_seen_by(one)) == {"node-1", "node-2", "node-3"}

    await until(all_three, 10)
    # A call held by node 3 is listed, under node 3, by node 1.
    async with SimulatedCaller(f"{three.ws}/ws/stream/CA-on-3", call_sid="CA-on-3") as caller:
        assert await caller.listen_until_mark(timeout=20) is not None, three.log()

        async def listed() -> bool:
            return (await nodes_seen_by(one)).get("node-3") == ["CA-on-3"]

        await until(listed, 5)
        await caller.stop()

    # Node 2 dies as a crashed machine would: no goodbye. It leaves the list within 10 s.
    two.process.kill()
    two.process.wait(timeout=10)

    async def without_two() -> bool:
        return set(await nodes_seen_by(one)) == {"node-1", "node-3"}

    gone_after = await until(without_two, 10)
    assert gone_after <= 10
    assert set(await nodes_seen_by(three)) == {"node-1", "node-3"}
    assert "shared state unreachable" not in one.log() + three.log()
