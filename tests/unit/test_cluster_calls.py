"""Calls across nodes (issue 19, items 1 and 2) against a real redis-server: what the gate learned on one
node found by the stream on another, the least loaded node chosen for a new call, and operator actions
routed to the node holding the call."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from voicebridge.admission.registry import InvalidNumber, UnknownCall
from voicebridge.cluster.facts import PendingCall, SharedCallFacts
from voicebridge.cluster.keys import ClusterKeys
from voicebridge.cluster.nodes import NodeDirectory
from voicebridge.cluster.operations import ClusterCallOperations
from voicebridge.cluster.placement import SharedPlacement
from voicebridge.cluster.routing import CallRouter, NodeUnreachable
from voicebridge.config.cluster import ClusterConfig
from voicebridge.config.schema import Settings
from voicebridge.sim.daemon import free_port
from voicebridge.sim.redis_server import RedisServer
from voicebridge.telephony.auth import AuthFailure
from voicebridge.telephony.stream_tokens import StreamTokens

KEYS = ClusterKeys("voicebridge")


def facts_on(redis: Redis, node: str, failures: list[str] | None = None) -> SharedCallFacts:
    return SharedCallFacts(redis, KEYS, node, lambda: (failures if failures is not None else []).append(node))


# --- the gate's facts -----------------------------------------------------------------------------------


async def test_what_one_node_learned_is_found_by_the_stream_on_another_once(redis: Redis) -> None:
    passthru, webhook, stream = facts_on(redis, "n1"), facts_on(redis, "n2"), facts_on(redis, "n3")
    await passthru.allow_minutes("CA-1", 2.5)  # Exotel's Passthru reached node 1
    await webhook.remember_pending(PendingCall("CA-1", "+919811111111", "+918000000002"))  # the applet, 2
    pending = await stream.take_pending("CA-1")  # the stream, node 3
    assert pending is not None
    assert (pending.from_number, pending.to_number, pending.minutes_left) == (
        "+919811111111",
        "+918000000002",
        2.5,
    )
    # Taken means gone, on every node: a second stream with this sid gets no budget and no numbers.
    for node in (stream, passthru, webhook):
        assert await node.take_pending("CA-1") is None


async def test_a_refusal_on_one_node_refuses_the_stream_on_another(redis: Redis) -> None:
    await facts_on(redis, "n1").deny("CA-2", "budget: no minutes left")
    assert await facts_on(redis, "n2").denied("CA-2") == "budget: no minutes left"
    assert await facts_on(redis, "n2").denied("CA-3") is None
    assert 0 < await redis.pttl(KEYS.call("CA-2")) <= 300_000


async def test_facts_another_node_could_not_have_written_are_ignored(redis: Redis) -> None:
    await redis.hset(
        KEYS.call("CA-evil"),
        mapping={"from": "9" * 500, "to": "+91800", "minutes": "inf", "provider": "x" * 99},
    )
    pending = await facts_on(redis, "n1").take_pending("CA-evil")
    assert pending is not None
    assert (pending.from_number, pending.to_number, pending.minutes_left) == ("", "+91800", None)
    assert len(pending.provider) <= 16
    for minutes in ("nan", "-3", "0", "many"):
        await redis.hset(KEYS.call("CA-m"), mapping={"minutes": minutes})
        taken = await facts_on(redis, "n1").take_pending("CA-m")
        assert taken is not None and taken.minutes_left is None, minutes


async def test_with_redis_down_the_facts_stay_on_this_node_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.3, socket_connect_timeout=0.3
    )
    failures: list[str] = []
    facts = facts_on(down, "n1", failures)
    with caplog.at_level(logging.WARNING, logger="voicebridge.cluster"):
        await facts.remember_pending(PendingCall("CA-4", "+919811111111"))
        await facts.deny("CA-5", "rate limited")
        assert await facts.denied("CA-5") == "rate limited"  # this node's own memory
        pending = await facts.take_pending("CA-4")
    await down.aclose()
    assert pending is not None and pending.from_number == "+919811111111"
    assert len(failures) == 3  # two writes and the take; the denial was found here without asking
    assert [r.getMessage() for r in caplog.records] == [
        "shared state unreachable (ConnectionError): call facts kept on this node only"
    ]


# --- placement ------------------------------------------------------------------------------------------


class FakeRegistry:
    """What the heartbeat, placement and routing read of a node's registry."""

    def __init__(self, capacity: int = 10, refusing: str = "") -> None:
        self.capacity, self.refusing = capacity, refusing
        self.calls: dict[str, dict[str, Any]] = {}
        self.hung_up: list[str] = []
        self.transferred: list[tuple[str, str]] = []

    def status(self) -> dict[str, Any]:
        return {"active_calls": len(self.calls), "capacity": self.capacity, "draining": False}

    def active_sids(self) -> list[str]:
        return list(self.calls)

    def refusal(self) -> str:
        return self.refusing or ("capacity" if len(self.calls) >= self.capacity else "")

    def list_active(self) -> list[dict[str, Any]]:
        return list(self.calls.values())

    def show(self, call_sid: str) -> dict[str, Any]:
        if call_sid not in self.calls:
            raise UnknownCall(call_sid)
        return self.calls[call_sid]

    async def hangup(self, call_sid: str) -> None:
        if self.calls.pop(call_sid, None) is None:
            raise UnknownCall(call_sid)
        self.hung_up.append(call_sid)

    async def transfer(self, call_sid: str, number: str) -> None:
        if not number.startswith("+"):
            raise InvalidNumber(f"{number!r} is not a phone number")
        if call_sid not in self.calls:
            raise UnknownCall(call_sid)
        self.transferred.append((call_sid, number))


class Node:
    def __init__(self, redis: Redis, name: str, registry: FakeRegistry, url: str = "") -> None:
        self.name, self.registry = name, registry
        self.directory = NodeDirectory(redis, ClusterConfig(), name, url or f"ws://127.0.0.1:9{name[-1]}00")
        self.placed: list[str] = []
        self.placement = SharedPlacement(
            redis,
            KEYS,
            self.directory,
            registry,
            6.0,
            lambda: None,
            self.placed.append,  # type: ignore[arg-type]
        )

    async def beat(self) -> None:
        await self.directory.publish(self.registry)  # type: ignore[arg-type]


async def test_new_calls_go_to_the_least_loaded_node_and_equals_take_turns(redis: Redis) -> None:
    one, two, three = (Node(redis, f"node-{n}", FakeRegistry(capacity=20)) for n in (1, 2, 3))
    three.registry.calls = {f"CA-old-{n}": {} for n in range(4)}  # already holds 4 calls
    for node in (one, two, three):
        await node.beat()
    # A burst between two heartbeats: the reservations, not the stale heartbeats, keep it even.
    chosen = [await one.placement.place(f"CA-{n}") for n in range(20)]
    counts = {
        name: sum(1 for c in chosen if c is not None and c.node_id == name)
        for name in ("node-1", "node-2", "node-3")
    }
    assert counts == {"node-1": 8, "node-2": 8, "node-3": 4}, counts  # 8 + 8 + (4 + 4) = 24 calls each way
    assert {c.base for c in chosen if c is not None and c.node_id == "node-2"} == {"ws://127.0.0.1:9200"}
    assert one.placed.count("node-2") == 8


async def test_a_full_draining_or_addressless_node_is_never_chosen(redis: Redis) -> None:
    full = Node(redis, "node-1", FakeRegistry(capacity=1))
    full.registry.calls = {"CA-x": {}}
    draining = Node(redis, "node-2", FakeRegistry(refusing="draining"))
    open_one = Node(redis, "node-3", FakeRegistry(capacity=2))
    addressless = Node(redis, "node-4", FakeRegistry())
    addressless.directory.node_url = ""
    for node in (full, draining, open_one, addressless):
        await node.beat()
    placed = [await full.placement.place(f"CA-p{n}") for n in range(3)]
    assert [p.node_id if p else None for p in placed] == ["node-3", "node-3", None]  # then none has room
    # This node is full, but while another has room the webhook does not refuse the caller.
    await redis.delete(KEYS.placing("node-3"))
    assert full.registry.refusal() == "capacity" and await full.placement.refusal() == ""
    open_one.registry.refusing = "overloaded"
    await open_one.beat()
    assert await full.placement.refusal() == "capacity"


async def test_a_reservation_ends_when_the_stream_arrives(redis: Redis) -> None:
    node = Node(redis, "node-1", FakeRegistry())
    await node.beat()
    assert (await node.placement.place("CA-r")) is not None
    assert await redis.zcard(KEYS.placing("node-1")) == 1
    await facts_on(redis, "node-1").take_pending("CA-r")
    assert await redis.zcard(KEYS.placing("node-1")) == 0


# --- routed operator actions ----------------------------------------------------------------------------


@pytest.fixture
async def listener(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def routed_pair(
    redis: Redis, listener: Redis, refused: list[str]
) -> tuple[ClusterCallOperations, FakeRegistry, list[asyncio.Task[None]]]:
    """Node 1 (asking) and node 3 (holding CA-on-3), each with its router listening."""
    registries = {"node-1": FakeRegistry(), "node-3": FakeRegistry()}
    registries["node-3"].calls = {"CA-on-3": {"call_sid": "CA-on-3", "state": "listening"}}
    routers, tasks = {}, []
    for name, registry in registries.items():
        router = routers[name] = CallRouter(listener, KEYS, name, registry, lambda: None, refused.append)  # type: ignore[arg-type]
        tasks.append(asyncio.create_task(router.run()))
        await NodeDirectory(redis, ClusterConfig(), name).publish(registry)  # type: ignore[arg-type]
    for router in routers.values():
        await asyncio.wait_for(router.listening.wait(), 5)
    directory = NodeDirectory(redis, ClusterConfig(), "node-1")
    operations = ClusterCallOperations(registries["node-1"], directory, routers["node-1"])  # type: ignore[arg-type]
    return operations, registries["node-3"], tasks


async def test_a_hangup_on_one_node_ends_the_call_another_holds(redis: Redis, listener: Redis) -> None:
    refused: list[str] = []
    operations, holder, tasks = await routed_pair(redis, listener, refused)
    try:
        shown = await operations.show("CA-on-3")
        assert shown == {"call_sid": "CA-on-3", "state": "listening", "node_id": "node-3"}
        listed = await operations.list_calls(everywhere=True)
        assert listed["nodes"] == {"node-1": "ok", "node-3": "ok"}
        assert [(c["call_sid"], c["node_id"]) for c in listed["calls"]] == [("CA-on-3", "node-3")]
        with pytest.raises(InvalidNumber):
            await operations.transfer("CA-on-3", "not-a-number")
        await operations.transfer("CA-on-3", "+919876543210")
        assert holder.transferred == [("CA-on-3", "+919876543210")]
        await operations.hangup("CA-on-3")
        assert holder.hung_up == ["CA-on-3"]
        with pytest.raises(UnknownCall):
            await operations.hangup("CA-nowhere")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert refused == []


async def test_a_node_that_is_not_listening_is_said_at_once(redis: Redis, listener: Redis) -> None:
    router = CallRouter(listener, KEYS, "node-1", FakeRegistry(), lambda: None, lambda _: None)  # type: ignore[arg-type]
    with pytest.raises(NodeUnreachable, match="not listening"):
        await asyncio.wait_for(router.ask("node-9", "hangup", "CA-1"), 2)


@pytest.mark.parametrize(
    "message",
    [
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"id": "x", "from": "node-1", "op": "hangup", "call_sid": "CA-on-3"}).encode(),
        json.dumps({"id": "a" * 32, "from": "node 1\r\n", "op": "hangup", "call_sid": "CA-on-3"}).encode(),
        json.dumps({"id": "a" * 32, "from": "node-1", "op": "FLUSHALL", "call_sid": "CA-on-3"}).encode(),
        json.dumps({"id": "a" * 32, "from": "node-1", "op": "hangup", "call_sid": "../CA"}).encode(),
        json.dumps(
            {"id": "a" * 32, "from": "node-1", "op": "transfer", "call_sid": "CA-on-3", "number": 5}
        ).encode(),
        b"{" * 100_000,
    ],
)
async def test_a_hostile_message_is_counted_and_changes_nothing(
    redis: Redis, listener: Redis, message: bytes
) -> None:
    refused: list[str] = []
    _, holder, tasks = await routed_pair(redis, listener, refused)
    try:
        assert await redis.publish(KEYS.operations("node-3"), message) == 1
        for _ in range(50):
            if refused:
                break
            await asyncio.sleep(0.02)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(refused) == 1 and holder.hung_up == [] and holder.transferred == []
    assert list(holder.calls) == ["CA-on-3"]


# --- tokens and config ----------------------------------------------------------------------------------


def test_a_token_issued_for_one_node_opens_no_other_nodes_socket() -> None:
    node_1, node_2 = StreamTokens(b"shared", audience="node-1"), StreamTokens(b"shared", audience="node-2")
    for_two = node_1.issue("CA-1", audience="node-2")
    node_2.check("CA-1", for_two)
    with pytest.raises(AuthFailure):
        node_1.check("CA-1", for_two)
    # Without node addresses the tokens are as they were: issued and checked by the same node.
    plain = StreamTokens(b"shared")
    plain.check("CA-1", plain.issue("CA-1"))


@pytest.mark.parametrize(
    ("server", "cluster", "problem"),
    [
        ({"node_url": "wss://node-2.bot.example.com"}, {}, "set cluster.redis_url"),
        ({"node_url": "wss://node-2.bot.example.com"}, {"redis_url": "redis://r:6379"}, "stream_secret"),
        (
            {"node_url": "https://node-2.example.com", "stream_secret": "s"},
            {"redis_url": "redis://r"},
            "ws://",
        ),
        (
            {"node_url": "wss://node-2.example.com/path", "stream_secret": "s"},
            {"redis_url": "redis://r"},
            "path",
        ),
    ],
)
def test_a_node_address_needs_the_shared_state_and_secret(
    server: dict[str, str], cluster: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings.model_validate({"server": server, "cluster": cluster})
    good = {"node_url": "wss://node-2.bot.example.com/", "stream_secret": "s"}
    settings = Settings.model_validate({"server": good, "cluster": {"redis_url": "redis://r:6379"}})
    assert settings.server.node_url == "wss://node-2.bot.example.com"


async def test_a_refusal_outlives_the_stream_taking_the_calls_facts(redis: Redis) -> None:
    """Review of issue 19: the stream takes the facts before it asks whether the call was refused."""
    await facts_on(redis, "n1").deny("CA-6", "budget: no minutes left")
    await facts_on(redis, "n2").remember_pending(PendingCall("CA-6", "+919811111111"))
    assert await facts_on(redis, "n3").take_pending("CA-6") is not None
    assert await facts_on(redis, "n3").denied("CA-6") == "budget: no minutes left"
