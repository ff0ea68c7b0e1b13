"""The daemon with the reference Node backend (examples/node-backend): replies, records, outages, restarts.

Real processes throughout: `node server.js` (the business's API, keeping what it receives in a JSON file),
`voicebridge serve`, and a simulated Exotel caller.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, free_port, start_daemon
from voicebridge.speech.wer import word_error_rate

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed on this machine"),
]

SERVER_JS = Path(__file__).resolve().parents[2] / "examples" / "node-backend" / "server.js"
API_KEY = "test-key-4242"


class NodeBackend:
    """The reference backend as a child process on a fixed port, so it can be stopped and brought back."""

    def __init__(self, store: Path, deny_from: str = "") -> None:
        self.port = free_port()
        self.store = store
        self.deny_from = deny_from
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "PORT": str(self.port), "API_KEY": API_KEY, "STORE": str(self.store)}
        env["DENY_FROM"] = self.deny_from
        self.process = subprocess.Popen(
            ["node", str(SERVER_JS)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on"), line

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)

    def received(self) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/v1/_received", headers={"X-Api-Key": API_KEY})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def records_for(self, call_sid: str) -> dict[str, list[dict[str, Any]]]:
        received = self.received()
        return {
            kind: [r for r in received[kind] if r["call_sid"] == call_sid]
            for kind in ("events", "costs", "conversations", "callbacks", "messages")
        }


def backend_config(node: NodeBackend) -> dict[str, dict[str, Any]]:
    return {
        "prompts": {"greeting": "Hello."},
        "backend": {"kind": "node", "url": node.url, "api_key": API_KEY, "breaker_reset_s": 1.0},
        # Short retries, so a backend that comes back is found within a second or two.
        "outbox": {"retry_base_s": 0.2, "retry_cap_s": 1.0},
    }


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeBackend]:
    backend = NodeBackend(tmp_path / "backend-store.json", deny_from="+919800000666")
    backend.start()
    yield backend
    backend.stop()


async def place_call(
    daemon: DaemonProcess, call_sid: str, from_number: str = "+919811100000"
) -> tuple[int, str]:
    """Passthru (the gate) then the Voicebot webhook, as Exotel's flow does; returns (status, stream URL)."""
    form = {"CallSid": call_sid, "From": from_number, "To": "+918047491899"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{daemon.http}/webhooks/exotel/passthru", data=form, allow_redirects=False
        ) as gate:
            if gate.status != 200:
                return gate.status, ""
        async with session.post(f"{daemon.http}/webhooks/exotel/incoming", data=form) as incoming:
            return incoming.status, (await incoming.json())["url"]


async def talk(
    daemon: DaemonProcess, call_sid: str, sentences: list[str], speak: Callable[[str, int], bytes]
) -> list[bytes]:
    """The greeting, then each sentence's reply (PCM16 at 8 kHz)."""
    status, url = await place_call(daemon, call_sid)
    assert status == 200, daemon.log()
    async with SimulatedCaller(url, call_sid=call_sid) as caller:
        greeting_mark = await caller.listen_until_mark(timeout=20)
        replies = [caller.log.audio_between(0, (greeting_mark or 0) + 0.001)]
        for sentence in sentences:
            result = await caller.turn(speak(sentence, 8000), timeout=30)
            assert result.mark_at is not None, daemon.log()
            replies.append(result.reply_pcm16)
        await caller.stop()
    return replies


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


RECORDS = ("event:started", "event:ended", "cost", "conversation")


def call_keys(keys: Any, call_sid: str) -> dict[str, str]:
    """A call's record keys (`{call_sid}:{session}:{record}`, one session here) by record."""
    found = {
        key.split(":", 2)[2]: key for key in keys if key.startswith(f"{call_sid}:") and key.count(":") >= 2
    }
    return {record: key for record, key in found.items() if record in RECORDS}


def delivered_once(node: NodeBackend, call_sid: str) -> None:
    """Every record of the call arrived, and each Idempotency-Key was posted exactly once."""
    wait_until(lambda: len(call_keys(node.received()["deliveries"], call_sid)) == len(RECORDS))
    time.sleep(1.0)  # any duplicate delivery would have happened by now
    deliveries = node.received()["deliveries"]
    keys = call_keys(deliveries, call_sid)
    assert [deliveries[keys[record]] for record in RECORDS] == [1, 1, 1, 1]
    assert len([key for key in deliveries if key.startswith(f"{call_sid}:")]) == len(RECORDS)


def outbox_states(daemon_dir: Path, call_sid: str) -> dict[str, str]:
    """The call's records' states by `{call_sid}:{record}` (the session id taken out of the key)."""
    with sqlite3.connect(daemon_dir / "state" / "outbox.sqlite3") as db:
        found = dict(db.execute("SELECT key, state FROM records WHERE call_sid = ?", (call_sid,)).fetchall())
    return {f"{call_sid}:{record}": found[key] for record, key in call_keys(found, call_sid).items()}


async def test_a_two_turn_call_is_answered_by_the_node_backend_and_recorded_there(
    node: NodeBackend,
    tmp_path: Path,
    speak: Callable[[str, int], bytes],
    transcribe: Callable[[bytes, int], str],
) -> None:
    daemon = start_daemon(tmp_path / "d", backend_config(node))
    try:
        greeting, *replies = await talk(
            daemon,
            "CA-node-1",
            ["What are your opening hours?", "I would like to book an appointment."],
            speak,
        )
        # The greeting is the called business's, from GET /v1/business.
        welcome = transcribe(greeting, 8000)
        assert word_error_rate("Welcome to Sunrise Clinic. How can I help?", welcome) <= 0.3, welcome
        heard = [transcribe(pcm, 8000) for pcm in replies]
        expected = [
            "We are open from nine to six, Monday to Saturday.",
            "I can book that for you. Which day suits you?",
        ]
        # Whisper tiny.en on Piper's randomised rendering of a 10-word reply misses a word or three
        # (CI saw "which they suit you to you", WER 0.4, and "I can both that for you", so no single
        # key word is safe): each reply is nearer its own reference than the other one, in order.
        for index, hypothesis in enumerate(heard):
            own, other = expected[index], expected[1 - index]
            assert word_error_rate(own, hypothesis) <= 0.5, heard
            assert word_error_rate(own, hypothesis) < word_error_rate(other, hypothesis), heard
        await asyncio.to_thread(delivered_once, node, "CA-node-1")
    finally:
        daemon.terminate()
    records = node.records_for("CA-node-1")
    assert next(m["body"]["text"].lower() for m in records["messages"]).startswith("what are your opening")
    assert [e["body"]["event"] for e in records["events"]] == ["started", "ended"]
    (cost,) = records["costs"]
    assert cost["body"]["ai_requests"] == 2 and cost["body"]["total"] > 0
    (conversation,) = records["conversations"]
    roles = [turn["role"] for turn in conversation["body"]["turns"]]
    assert roles == ["bot", "caller", "bot", "caller", "bot"]
    assert outbox_states(tmp_path / "d", "CA-node-1") == dict.fromkeys(
        ["CA-node-1:event:started", "CA-node-1:event:ended", "CA-node-1:cost", "CA-node-1:conversation"],
        "delivered",
    )


async def test_backend_down_for_the_whole_call_apologises_then_delivers_once_it_is_back(
    node: NodeBackend,
    tmp_path: Path,
    speak: Callable[[str, int], bytes],
    transcribe: Callable[[bytes, int], str],
) -> None:
    daemon = start_daemon(tmp_path / "d", backend_config(node))
    try:
        node.stop()
        _greeting, reply = await talk(daemon, "CA-node-down", ["What are your opening hours?"], speak)
        assert "sorry" in transcribe(reply, 8000).lower()
        wait_until(lambda: len(outbox_states(tmp_path / "d", "CA-node-down")) == 4)
        assert set(outbox_states(tmp_path / "d", "CA-node-down").values()) == {"pending"}
        node.start()
        await asyncio.to_thread(delivered_once, node, "CA-node-down")
    finally:
        daemon.terminate()
    (conversation,) = node.records_for("CA-node-down")["conversations"]
    said = [turn["text"] for turn in conversation["body"]["turns"] if turn["role"] == "bot"]
    assert said[-1].startswith("Sorry")


async def test_records_survive_sigkill_and_are_delivered_after_a_restart(
    node: NodeBackend, tmp_path: Path, speak: Callable[[str, int], bytes]
) -> None:
    first = start_daemon(tmp_path / "d", backend_config(node))
    try:
        node.stop()
        await talk(first, "CA-node-kill", ["Hello there."], speak)
        wait_until(lambda: len(outbox_states(tmp_path / "d", "CA-node-kill")) == 4)
    finally:
        first.process.kill()  # SIGKILL: no drain, no cleanup
        first.process.wait(timeout=10)
    node.start()
    second = start_daemon(tmp_path / "d", backend_config(node))
    try:
        await asyncio.to_thread(delivered_once, node, "CA-node-kill")
    finally:
        second.terminate()


async def test_budget_deny_refuses_the_call_at_the_gate_and_its_stream(
    node: NodeBackend, tmp_path: Path
) -> None:
    daemon = start_daemon(tmp_path / "d", backend_config(node))
    try:
        status, _ = await place_call(daemon, "CA-node-denied", from_number="+919800000666")
        assert status == 302
        async with SimulatedCaller(
            f"{daemon.ws}/ws/stream/CA-node-denied", call_sid="CA-node-denied"
        ) as caller:
            await asyncio.wait_for(caller.closed.wait(), 10)
            assert caller.close_code == 1008 and not caller.log.frames
        allowed, _ = await place_call(daemon, "CA-node-allowed")
        assert allowed == 200
        checks = node.received()["budget_checks"]
        assert {c["body"]["call_sid"] for c in checks} >= {"CA-node-denied", "CA-node-allowed"}
        assert "budget: blocked caller" in daemon.log()
    finally:
        daemon.terminate()


async def test_repeated_backend_failures_hand_the_call_to_the_fallback_number(
    node: NodeBackend, tmp_path: Path, speak: Callable[[str, int], bytes]
) -> None:
    config = backend_config(node)
    config["calls"] = {"max_backend_failures": 2, "fallback_number": "+919800000001"}
    daemon = start_daemon(tmp_path / "d", config)
    try:
        node.stop()
        status, url = await place_call(daemon, "CA-node-fallback")
        assert status == 200
        async with SimulatedCaller(url, call_sid="CA-node-fallback") as caller:
            await caller.listen_until_mark(timeout=20)
            first = await caller.turn(speak("What are your opening hours?", 8000), timeout=30)
            assert first.mark_at is not None  # the apology
            await caller.say(speak("Hello, can you hear me?", 8000), trailing_silence_s=20)
            await asyncio.wait_for(caller.closed.wait(), 30)  # transfer line, then the stream closes
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{daemon.http}/webhooks/exotel/transfer", params={"CallSid": "CA-node-fallback"}
            ) as response:
                assert (await response.json())["destination"]["numbers"] == ["+919800000001"]
        assert "backend failed (2 in a row)" in daemon.log()
    finally:
        daemon.terminate()
