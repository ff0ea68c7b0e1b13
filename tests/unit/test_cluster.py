"""The shared state (issue 19, item 2) against a real redis-server: the per-caller rate limit across
nodes, node heartbeats that expire, and what happens when Redis is down."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from voicebridge.cluster.nodes import NodeDirectory, NodeState, heartbeat
from voicebridge.cluster.rates import SharedCallerRates
from voicebridge.config.cluster import ClusterConfig
from voicebridge.config.load import ConfigError, load_config
from voicebridge.sim.daemon import free_port


async def test_the_caller_limit_holds_across_nodes(redis: Redis) -> None:
    failures: list[str] = []
    node_1 = SharedCallerRates(redis, "vb", "node-1", lambda: failures.append("1"))
    node_2 = SharedCallerRates(redis, "vb", "node-2", lambda: failures.append("2"))
    caller, other = "+919811111111", "+919822222222"
    assert await node_1.admit(caller, 2, 0.5)
    assert await node_2.admit(caller, 2, 0.5)
    assert not await node_1.admit(caller, 2, 0.5)  # the third call, on either node
    assert not await node_2.admit(caller, 2, 0.5)
    assert await node_2.admit(other, 2, 0.5)  # another caller is not affected
    await asyncio.sleep(0.6)  # the window passes
    assert await node_1.admit(caller, 2, 0.5)
    assert failures == []
    # The number is not in Redis in the clear, and a window's key expires with it (the other caller's
    # has already gone).
    keys = [key.decode() async for key in redis.scan_iter(match="vb:rate:*")]
    assert len(keys) == 1 and "9811" not in keys[0]
    assert 0 < await redis.pttl(keys[0]) <= 500


async def test_a_hostile_number_is_only_a_hashed_key(redis: Redis) -> None:
    rates = SharedCallerRates(redis, "vb", "node-1", lambda: None)
    for number in ("*", "vb:node:x\r\nFLUSHALL", "\udcff" * 10, "9" * 100_000):
        assert await rates.admit(number, 1, 5.0)
        assert not await rates.admit(number, 1, 5.0)
    keys = [key.decode() async for key in redis.scan_iter(match="*")]
    assert len(keys) == 4 and all(len(key) == len("vb:rate:") + 32 for key in keys), keys


async def test_when_redis_is_down_calls_go_ahead_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    failures: list[str] = []
    rates = SharedCallerRates(client, "vb", "node-1", lambda: failures.append("x"))
    with caplog.at_level(logging.WARNING, logger="voicebridge.cluster"):
        assert await rates.admit("+919811111111", 1, 60.0)
        assert await rates.admit("+919811111111", 1, 60.0)
    await client.aclose()
    assert failures == ["x", "x"]
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["shared state unreachable (ConnectionError): caller rate limits not applied"]


class FakeRegistry:
    def __init__(self, sids: list[str], capacity: int = 60) -> None:
        self.sids, self.capacity = sids, capacity

    def status(self) -> dict[str, Any]:
        return {"active_calls": len(self.sids), "capacity": self.capacity, "draining": False}

    def active_sids(self) -> list[str]:
        return list(self.sids)

    def refusal(self) -> str:
        return "capacity" if len(self.sids) >= self.capacity else ""


async def test_nodes_list_each_other_and_a_silent_node_drops_out(redis: Redis) -> None:
    config = ClusterConfig(heartbeat_s=0.1, node_ttl_s=0.4)
    one, two = NodeDirectory(redis, config, "node-1"), NodeDirectory(redis, config, "node-2")
    registry_1, registry_2 = FakeRegistry(["CA-a", "CA-b"]), FakeRegistry([], capacity=0)
    beats = [
        asyncio.create_task(heartbeat(one, registry_1, 0.1, lambda: None)),  # type: ignore[arg-type]
        asyncio.create_task(heartbeat(two, registry_2, 0.1, lambda: None)),  # type: ignore[arg-type]
    ]
    await asyncio.sleep(0.25)
    nodes = await one.nodes()
    assert [(n.node_id, n.active_calls, n.calls, n.refusal) for n in nodes] == [
        ("node-1", 2, ["CA-a", "CA-b"], ""),
        ("node-2", 0, [], "capacity"),
    ]
    beats[1].cancel()  # node 2 stops writing, as a killed node does
    await asyncio.sleep(0.6)
    assert [n.node_id for n in await one.nodes()] == ["node-1"]
    await one.withdraw()  # a clean stop leaves at once
    beats[0].cancel()
    await asyncio.gather(*beats, return_exceptions=True)
    assert await two.nodes() == []


async def test_a_node_key_that_is_not_a_heartbeat_is_left_out(redis: Redis) -> None:
    config = ClusterConfig()
    directory = NodeDirectory(redis, config, "node-1")
    await directory.publish(FakeRegistry(["CA-a"]))  # type: ignore[arg-type]
    await redis.set("voicebridge:node:evil", b"\xff not json")
    await redis.set("voicebridge:node:list", json.dumps(["node_id"]))
    await redis.set("voicebridge:node:partial", json.dumps({"node_id": "x", "capacity": "many"}))
    assert [node.node_id for node in await directory.nodes()] == ["node-1"]
    # A field of the wrong type makes the whole value not a heartbeat.
    shape = {"node_id": "n", "active_calls": 1, "capacity": 2, "draining": False, "calls": ["CA-1"]}
    assert NodeState.parse(json.dumps(shape)) is not None
    assert NodeState.parse(json.dumps(shape | {"calls": "CA-1"})) is None
    assert NodeState.parse(json.dumps(shape | {"calls": [{"sid": 1}]})) is None
    # Numbers JSON cannot carry but Python's parser accepts: not a heartbeat either (no 500 in the API).
    assert NodeState.parse(json.dumps(shape | {"active_calls": float("inf")})) is None
    assert NodeState.parse(json.dumps(shape | {"at": float("nan")})) is None
    await redis.set("voicebridge:node:inf", json.dumps(shape | {"node_id": "inf", "capacity": float("inf")}))
    assert [node.node_id for node in await directory.nodes()] == ["node-1"]


def test_a_bad_redis_url_is_refused_without_quoting_its_password(tmp_path: Path) -> None:
    config = tmp_path / "vb.toml"
    config.write_text('[cluster]\nredis_url = "http://:hunter2secret@redis.internal:6379"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "cluster.redis_url" in str(caught.value) and "hunter2secret" not in str(caught.value)


@pytest.mark.parametrize("node_id", ["node 1", "-lead", "x" * 65, "a/b", "n\r\nX"])
def test_a_node_id_must_be_a_plain_name(node_id: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        ClusterConfig(node_id=node_id)
