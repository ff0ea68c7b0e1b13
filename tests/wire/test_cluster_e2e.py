"""Issue 19 over the wire: three real daemons sharing a real redis-server, each with its own address
(`server.node_url`) and one stream secret, behind one webhook entry point (node 1's).

In file order, on one cluster: 90 calls through node 1's webhook spread over the nodes, each served where
it was placed, with the webhook's facts and every call's report; the per-caller limit holds across nodes;
`voicebridge calls hangup` on node 1 ends a call node 3 holds, and `calls list --cluster` shows it; node 2
killed with SIGKILL leaves placement within 10 s, and the report it had not delivered is delivered once it
restarts.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.report_receiver import ReportReceiver
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, free_port, start_daemon
from voicebridge.sim.redis_server import RedisServer, start_redis_server

pytestmark = pytest.mark.e2e

CALLER = "+919811111111"
WEBHOOK_TOKEN = "cluster-webhook-token-0123456789"
MANAGEMENT = {"Authorization": "Bearer cluster-management-token-0123"}
NODES = ("node-1", "node-2", "node-3")


@dataclass
class Cluster:
    redis: RedisServer
    daemons: dict[str, DaemonProcess]
    configs: dict[str, dict[str, dict[str, Any]]]
    workdirs: dict[str, Path]
    report_port: int

    def restart(self, node: str) -> DaemonProcess:
        """Start a node again on its port and state directory (its outbox), as a supervisor would."""
        self.daemons[node] = start_daemon(self.workdirs[node], self.configs[node])
        return self.daemons[node]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    redis = start_redis_server(root / "redis")
    report_port = free_port()
    made = Cluster(redis, {}, {}, {}, report_port)
    try:
        for node in NODES:
            port = free_port()
            made.workdirs[node] = root / node
            made.configs[node] = {
                "server": {
                    "port": port,
                    "node_url": f"ws://127.0.0.1:{port}",
                    "stream_secret": "one-secret-for-every-node",
                    "max_concurrent_calls": 60,
                },
                # Token auth: webhooks carry ?token=, and a stream opens only with its per-call token,
                # which names the node it was placed on.
                "exotel": {"webhook_auth": "token", "webhook_token": WEBHOOK_TOKEN},
                "twilio": {"enabled": False},
                "management": {"token": MANAGEMENT["Authorization"].removeprefix("Bearer ")},
                "prompts": {"greeting": "Hello."},
                "calls": {"rate_limit_calls": 2, "rate_limit_window_s": 600},
                "report": {
                    "url": f"http://127.0.0.1:{report_port}/report",
                    "secret": "cluster-report-secret",
                },
                "outbox": {"retry_base_s": 0.2, "retry_cap_s": 1.0},
                "cluster": {"redis_url": redis.url, "node_id": node, "heartbeat_s": 1.0, "node_ttl_s": 3.0},
            }
            made.daemons[node] = start_daemon(made.workdirs[node], made.configs[node])
        yield made
    finally:
        for daemon in made.daemons.values():
            if daemon.process.poll() is None:
                daemon.terminate()
        redis.stop()


async def webhook(
    session: aiohttp.ClientSession, daemon: DaemonProcess, path: str, form: dict[str, str]
) -> Any:
    url = f"{daemon.http}/webhooks/exotel/{path}?token={WEBHOOK_TOKEN}"
    async with session.post(url, data=form, allow_redirects=False) as response:
        return response.status, await response.text()


async def placed_url(
    session: aiohttp.ClientSession, entry: DaemonProcess, call_sid: str, from_number: str
) -> str:
    """The stream URL node `entry`'s incoming webhook hands out for a new call."""
    status, body = await webhook(session, entry, "incoming", {"CallSid": call_sid, "From": from_number})
    assert status == 200, body
    return str(json.loads(body)["url"])


def node_of(cluster: Cluster, url: str) -> str:
    for node, daemon in cluster.daemons.items():
        if url.startswith(f"{daemon.ws}/ws/stream/"):
            return node
    raise AssertionError(f"{url} names no node")


async def nodes_seen_by(daemon: DaemonProcess) -> dict[str, list[str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{daemon.http}/api/cluster/nodes", headers=MANAGEMENT) as response,
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


def voicebridge(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, as an operator on that node's machine runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")} | {"COLUMNS": "250"}
    command = [sys.executable, "-m", "voicebridge", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


async def placed_on(
    cluster: Cluster, session: aiohttp.ClientSession, node: str, prefix: str
) -> tuple[str, str]:
    """A new call's sid and stream URL, placed through node 1's webhook on `node`. Once no node lists a
    call, equally loaded nodes take turns, so one of the next few placements lands there."""

    async def idle() -> bool:
        return not any((await nodes_seen_by(cluster.daemons["node-1"])).values())

    await until(idle, 10)
    for attempt in range(6):
        sid = f"{prefix}-{attempt}"
        url = await placed_url(session, cluster.daemons["node-1"], sid, "+919833333333")
        if node_of(cluster, url) == node:
            return sid, url
    raise AssertionError(f"no call was placed on {node}")


async def greeted_call(url: str, call_sid: str, stream_from: str = "+910000000000") -> bool:
    """One call on `url`: the greeting heard to its end, then the caller hangs up."""
    async with SimulatedCaller(url, call_sid=call_sid, from_number=stream_from) as caller:
        heard = await caller.listen_until_mark(timeout=30) is not None
        await caller.stop()
    return heard


async def test_90_calls_through_one_webhook_spread_over_the_nodes(cluster: Cluster) -> None:
    entry = cluster.daemons["node-1"]

    async def call(number: int, session: aiohttp.ClientSession, lanes: asyncio.Semaphore) -> tuple[str, bool]:
        async with lanes:
            sid = f"CA-spread-{number:03d}"
            url = await placed_url(session, entry, sid, f"+91981100{number:04d}")
            return node_of(cluster, url), await greeted_call(url, sid)

    async with ReportReceiver(port=cluster.report_port) as receiver, aiohttp.ClientSession() as session:
        lanes = asyncio.Semaphore(15)  # 15 callers at a time: a burst between heartbeats, 90 in all
        results = await asyncio.gather(*(call(n, session, lanes) for n in range(90)))
        spread = Counter(node for node, _ in results)
        assert all(heard for _, heard in results), [node for node, heard in results if not heard]
        assert set(spread) == set(NODES) and all(20 <= spread[node] <= 40 for node in NODES), spread

        # Each call's report came from the node that served it, with the number node 1's webhook was
        # given (not the stream's own copy): the gate's facts crossed to the serving node.
        async def all_reported() -> bool:
            return len({report["call_sid"] for report in reports(receiver)}) == 90

        await until(all_reported, 30)
    froms = {report["call_sid"]: report["from"] for report in reports(receiver)}
    assert all(froms[f"CA-spread-{n:03d}"] == f"+91981100{n:04d}" for n in range(90))
    for node in NODES:
        assert "Traceback" not in cluster.daemons[node].log()


def reports(receiver: ReportReceiver) -> list[dict[str, Any]]:
    return [json.loads(seen.body) for seen in receiver.delivered()]


async def test_the_caller_limit_holds_across_nodes(cluster: Cluster) -> None:
    one, two, three = (cluster.daemons[node] for node in NODES)
    async with aiohttp.ClientSession() as session:
        # Two calls from one number are allowed, on different nodes; the third is refused by the third
        # node, which has never seen this caller itself. Another caller is not affected.
        statuses = [
            (await webhook(session, node, "passthru", {"CallSid": f"CA-rate-{n}", "From": CALLER}))[0]
            for n, node in enumerate((one, two, three))
        ]
        assert statuses == [200, 200, 302]
        other = await webhook(session, three, "passthru", {"CallSid": "CA-rate-x", "From": "+919822222222"})
        assert other[0] == 200
        # The refusal node 3 decided is found by node 1's incoming webhook: no stream URL for that call.
        assert (await webhook(session, one, "incoming", {"CallSid": "CA-rate-2", "From": CALLER}))[0] == 403


async def test_a_hangup_on_node_1_ends_the_call_node_3_holds(cluster: Cluster) -> None:
    one, three = cluster.daemons["node-1"], cluster.daemons["node-3"]
    async with aiohttp.ClientSession() as session:
        sid, url = await placed_on(cluster, session, "node-3", "CA-held")
    async with SimulatedCaller(url, call_sid=sid) as caller:
        assert await caller.listen_until_mark(timeout=30) is not None, three.log()

        async def listed_by_node_1() -> bool:
            listed = await asyncio.to_thread(
                voicebridge, "calls", "list", "--cluster", "--json", "--socket", str(one.control_socket)
            )
            assert listed.returncode == 0, listed.stderr
            doc = json.loads(listed.stdout)
            return {"call_sid": sid, "node_id": "node-3"}.items() <= next(
                (call for call in doc["calls"] if call["call_sid"] == sid), {}
            ).items() and doc["nodes"] == dict.fromkeys(NODES, "ok")

        await until(listed_by_node_1, 10)
        hung_up = await asyncio.to_thread(
            voicebridge, "calls", "hangup", sid, "--socket", str(one.control_socket)
        )
        assert hung_up.returncode == 0 and f"hung up {sid}" in hung_up.stdout, hung_up.stderr
        await asyncio.wait_for(caller.closed.wait(), 10)
    assert "hangup requested by node node-1" in three.log()
    # A call no node holds is an unknown call on node 1, as on one machine.
    missing = await asyncio.to_thread(
        voicebridge, "calls", "hangup", "CA-nowhere", "--socket", str(one.control_socket)
    )
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


async def test_a_killed_node_leaves_placement_and_delivers_its_records_after_restart(
    cluster: Cluster,
) -> None:
    one, two = cluster.daemons["node-1"], cluster.daemons["node-2"]
    async with aiohttp.ClientSession() as session:
        # A call served by node 2 while the report receiver is down: its report waits in node 2's outbox.
        sid, url = await placed_on(cluster, session, "node-2", "CA-on-2")
        assert await greeted_call(url, sid)

        async def waiting_in_the_outbox() -> bool:
            listed = await asyncio.to_thread(
                voicebridge, "outbox", "list", "--call", sid, "--json", "--socket", str(two.control_socket)
            )
            records = json.loads(listed.stdout)["records"] if listed.returncode == 0 else []
            return any(record["attempts"] >= 1 for record in records)

        await until(waiting_in_the_outbox, 10)
        # Node 2 dies as a crashed machine would: no goodbye, no drain, no delivery.
        two.process.kill()
        two.process.wait(timeout=10)

        async def without_two() -> bool:
            return set(await nodes_seen_by(one)) == {"node-1", "node-3"}

        assert await until(without_two, 10) <= 10
        placed = [
            node_of(cluster, await placed_url(session, one, f"CA-after-{n}", f"+9198555{n:05d}"))
            for n in range(9)
        ]
        assert set(placed) == {"node-1", "node-3"}, placed

    async with ReportReceiver(port=cluster.report_port) as receiver:
        restarted = await asyncio.to_thread(cluster.restart, "node-2")

        async def delivered() -> bool:
            return sid in {report["call_sid"] for report in reports(receiver)}

        await until(delivered, 30)
        assert "Traceback" not in restarted.log()

        async def back() -> bool:
            return set(await nodes_seen_by(one)) == set(NODES)

        await until(back, 10)
