"""Records survive: the outbox's retry rule, parked records, per-session keys, passthru reports, XDG state."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.fakes.node_api import FakeNodeApi
from voicebridge.admission.gate import CallGate
from voicebridge.admission.registry import CallRegistry
from voicebridge.backends.base import CallInfo
from voicebridge.backends.echo import EchoBackend
from voicebridge.backends.http import BackendHttp
from voicebridge.backends.node import NodeBackend
from voicebridge.cluster.placement import LocalPlacement
from voicebridge.config.schema import BackendConfig, Settings
from voicebridge.records.call_records import CallRecorder
from voicebridge.records.costs import CallUsage
from voicebridge.records.outbox import DeliveryResult, Outbox
from voicebridge.server.access import access_control
from voicebridge.server.control import ControlServer
from voicebridge.server.keys import BACKEND, GATE, METRICS, OUTBOX, PLACEMENT, REGISTRY, SETTINGS
from voicebridge.server.metrics import Metrics
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.telephony import providers


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class Switchable:
    """A record sink whose answer the test sets; remembers every attempt."""

    def __init__(self, answer: DeliveryResult, detail: str) -> None:
        self.answer, self.detail = answer, detail
        self.attempts: list[str] = []

    async def deliver(
        self, path: str, payload: dict[str, Any], idempotency_key: str
    ) -> tuple[DeliveryResult, str]:
        self.attempts.append(idempotency_key)
        return self.answer, "" if self.answer == "delivered" else self.detail


# --- the retry rule -----------------------------------------------------------------------------


# 413 too: the backend's body limit can be raised, and then the record goes through.
@pytest.mark.parametrize("status", [401, 403, 404, 405, 408, 409, 410, 413, 429, 500, 502, 503, 504])
async def test_node_delivery_retries_every_answer_that_may_yet_succeed(status: int) -> None:
    async with FakeNodeApi(record_status=status) as api:
        node = NodeBackend(_cfg(api), BackendHttp(_cfg(api)))
        await node.start()
        try:
            result = await node.deliver("/v1/calls/CA-1/events", {"event": "started"}, "CA-1:s:event:started")
        finally:
            await node.close()
    assert tuple(result) == ("retry", f"HTTP {status}")


@pytest.mark.parametrize("status", [400, 422])
async def test_node_delivery_parks_only_a_record_that_can_never_succeed(status: int) -> None:
    async with FakeNodeApi(record_status=status) as api:
        node = NodeBackend(_cfg(api), BackendHttp(_cfg(api)))
        await node.start()
        try:
            result = await node.deliver("/v1/calls/CA-1/cost", {"total": 1}, "CA-1:s:cost")
        finally:
            await node.close()
    assert tuple(result) == ("parked", f"HTTP {status}")


async def test_node_delivery_retries_when_the_backend_is_unreachable() -> None:
    async with FakeNodeApi() as api:
        config = _cfg(api)
    node = NodeBackend(config, BackendHttp(config))  # the fake is gone: connection refused
    await node.start()
    try:
        result, detail = await node.deliver("/v1/calls/CA-1/cost", {"total": 1}, "CA-1:s:cost")
    finally:
        await node.close()
    assert result == "retry" and detail


def _cfg(api: FakeNodeApi) -> BackendConfig:
    return BackendConfig(kind="node", url=api.url, api_key="node-key", breaker_failures=1000)


async def test_a_wrong_key_for_a_while_loses_nothing(tmp_path: Path) -> None:
    sink = Switchable("retry", "HTTP 401")
    outbox = Outbox(tmp_path / "o.sqlite3", sink, retry_base_s=0.01, retry_cap_s=0.05)
    await outbox.open()
    try:
        for n in range(3):
            await outbox.add(f"CA-9:s:{n}", "CA-9", "event", "/v1/calls/CA-9/events", {"n": n})

        async def tried_often() -> bool:
            return len(sink.attempts) >= 15

        await wait_for(tried_often)
        records = await outbox.records("CA-9")
        assert {r.state for r in records} == {"pending"} and {r.last_error for r in records} == {"HTTP 401"}
        sink.answer = "delivered"

        async def all_delivered() -> bool:
            return await outbox.counts() == {"delivered": 3}

        await wait_for(all_delivered)
    finally:
        await outbox.close()


async def test_parked_records_stay_listed_and_retry_puts_them_back(tmp_path: Path) -> None:
    sink = Switchable("parked", "HTTP 422")
    outbox = Outbox(tmp_path / "o.sqlite3", sink, retry_base_s=0.01, retry_cap_s=0.05)
    await outbox.open()
    try:
        for n in range(3):
            await outbox.add(f"CA-8:s:{n}", "CA-8", "cost", "/v1/calls/CA-8/cost", {"n": n})

        async def parked() -> bool:
            return await outbox.counts() == {"parked": 3}

        await wait_for(parked)
        listed = await outbox.listing(("parked",))
        assert [r.key for r in listed] == ["CA-8:s:0", "CA-8:s:1", "CA-8:s:2"]
        assert (await outbox.find(str(listed[1].id))).payload == {"n": 1}
        sink.answer = "delivered"
        assert await outbox.retry("CA-8:s:0") == 1

        async def one_delivered() -> bool:
            return await outbox.counts() == {"delivered": 1, "parked": 2}

        await wait_for(one_delivered)
        with pytest.raises(ValueError):
            await outbox.retry("CA-8:s:0")  # delivered: nothing to retry
        assert await outbox.retry(None) == 2

        async def all_delivered() -> bool:
            return await outbox.counts() == {"delivered": 3}

        await wait_for(all_delivered)
    finally:
        await outbox.close()


async def test_records_an_earlier_version_rejected_are_delivered_again(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    first = Outbox(path, None)
    await first.open()
    await first.add("CA-7:event:started", "CA-7", "event", "/v1/calls/CA-7/events", {"event": "started"})
    await first.close()
    with sqlite3.connect(path) as db:  # as the old rule left a 401: rejected for good
        db.execute("UPDATE records SET state = 'rejected', attempts = 1, last_error = 'rejected'")
    sink = Switchable("delivered", "")
    second = Outbox(path, sink, retry_base_s=0.01, retry_cap_s=0.05)
    await second.open()
    try:

        async def delivered() -> bool:
            return await second.counts() == {"delivered": 1}

        await wait_for(delivered)
        assert sink.attempts == ["CA-7:event:started"]
    finally:
        await second.close()


# --- one call, two stream sessions ----------------------------------------------------------------


async def test_a_second_stream_session_of_a_call_keeps_its_own_records(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", None)
    await outbox.open()
    info = CallInfo("CA-twice", "exotel", "+919800000001", "+918000000002")
    try:
        for said in ("first session", "second session"):
            recorder = CallRecorder(outbox, Settings(), info)
            await recorder.started()
            transcript = [{"role": "caller", "text": said, "at": 1.0}]
            await recorder.ended("completed", CallUsage(duration_s=5.0), transcript)
        records = await outbox.records("CA-twice")
    finally:
        await outbox.close()
    assert len(records) == 8 and len({r.key for r in records}) == 8
    sessions = {r.payload["session"] for r in records}
    assert len(sessions) == 2
    for session in sessions:
        kinds = sorted(r.key.removeprefix(f"CA-twice:{session}:") for r in records if session in r.key)
        assert kinds == ["conversation", "cost", "event:ended", "event:started"]
    said = [r.payload["turns"][0]["text"] for r in records if r.kind == "conversation"]
    assert said == ["first session", "second session"]


# --- the outbox over the control socket and the CLI ----------------------------------------------


async def cli(socket_path: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")} | {"COLUMNS": "250"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicebridge",
        "outbox",
        *args,
        "--socket",
        str(socket_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_outbox_list_show_and_retry_over_the_control_socket(tmp_path: Path) -> None:
    sink = Switchable("parked", "HTTP 422")
    outbox = Outbox(tmp_path / "o.sqlite3", sink, retry_base_s=0.01, retry_cap_s=0.05)
    await outbox.open()
    server = ControlServer(CallRegistry(4), tmp_path / "c.sock", dict, outbox=outbox)
    await server.start()
    try:
        await outbox.add("CA-6:s:cost", "CA-6", "cost", "/v1/calls/CA-6/cost", {"total": 0.5})
        await outbox.add("CA-6:s:conversation", "CA-6", "conversation", "/v1/calls/CA-6/x", {"turns": []})

        async def parked() -> bool:
            return await outbox.counts() == {"parked": 2}

        await wait_for(parked)
        code, out, err = await cli(server.path, "list", "--json")
        assert code == 0, err
        listed = json.loads(out)
        assert [r["key"] for r in listed["records"]] == ["CA-6:s:cost", "CA-6:s:conversation"]
        assert {r["last_error"] for r in listed["records"]} == {"HTTP 422"}
        assert listed["counts"] == {"parked": 2}
        code, out, _ = await cli(server.path, "list")
        assert code == 0 and "CA-6:s:cost" in out and "2 parked" in out and "HTTP 422" in out
        code, out, _ = await cli(server.path, "show", "CA-6:s:cost")
        shown = json.loads(out)
        assert code == 0 and shown["payload"] == {"total": 0.5} and shown["state"] == "parked"
        code, _, err = await cli(server.path, "show", "CA-nope")
        assert code == 1 and "no outbox record" in err and err.count("\n") == 1
        code, _, err = await cli(server.path, "retry")
        assert code == 2 and "--all-parked" in err

        sink.answer = "delivered"
        code, out, _ = await cli(server.path, "retry", "CA-6:s:cost")
        assert code == 0 and "queued 1 record" in out

        async def one_delivered() -> bool:
            return await outbox.counts() == {"delivered": 1, "parked": 1}

        await wait_for(one_delivered)
        code, out, _ = await cli(server.path, "retry", "--all-parked")
        assert code == 0 and "queued 1 record" in out

        async def all_delivered() -> bool:
            return await outbox.counts() == {"delivered": 2}

        await wait_for(all_delivered)
        code, out, _ = await cli(server.path, "list", "--json")
        assert json.loads(out)["records"] == []
        code, _, err = await cli(server.path, "retry", "CA-6:s:cost")
        assert code == 1 and "delivered" in err
    finally:
        await server.close()
        await outbox.close()


# --- where state lives ---------------------------------------------------------------------------


def test_state_dir_follows_xdg_state_home_and_ignores_a_relative_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert Settings().state_path() == tmp_path / "xdg-state" / "voicebridge"
    # The spec: a relative path in an XDG variable is invalid and must be ignored.
    for ignored in ("relative/state", ""):
        monkeypatch.setenv("XDG_STATE_HOME", ignored)
        assert Settings().state_path() == tmp_path / "home" / ".local" / "state" / "voicebridge"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert Settings().state_path() == tmp_path / "home" / ".local" / "state" / "voicebridge"
    # systemd's StateDirectory= and the config still come first.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/voicebridge")
    assert Settings().state_path() == Path("/var/lib/voicebridge")
    configured = Settings.model_validate({"server": {"state_dir": str(tmp_path / "mine")}})
    assert configured.state_path() == tmp_path / "mine"


# --- Exotel's Passthru: the gate before the Voicebot applet, a report after it -------------------

REPORT = {
    "CallSid": "CA-pt-1",
    "From": "+918888000000",
    "To": "+912233344455",
    "Direction": "inbound",
    "Stream[StreamSID]": "6f048d2e897a0d2d4029560f3f541947",
    "Stream[Status]": "completed",
    "Stream[Duration]": "28",
    "Stream[RecordingUrl]": "https://recordings.exotel.com/exotelrecordings/x/6f04.mp3",
    "Stream[StreamUrl]": "wss://bot.example.com/ws/stream",
    "Stream[DisconnectedBy]": "bot",
}


class LoadSwitch:
    """The load monitor's answer as the test sets it (the registry's public `load_refusal` seam)."""

    def __init__(self) -> None:
        self.refusal = ""

    def __call__(self) -> str:
        return self.refusal


LOAD_SWITCH = web.AppKey("load_switch", LoadSwitch)


@pytest.fixture
async def passthru_app(tmp_path: Path) -> AsyncIterator[tuple[TestClient, web.Application]]:
    """The webhook routes behind the daemon's door (hostile input → 4xx) on an app with a real outbox file,
    a one-call registry and a rate limit of 1."""
    app = web.Application(middlewares=[access_control])
    app[SETTINGS] = Settings.model_validate({"calls": {"rate_limit_calls": 1, "rate_limit_window_s": 600}})
    app[METRICS] = Metrics()
    load = LoadSwitch()
    app[LOAD_SWITCH] = load
    app[REGISTRY] = CallRegistry(1, load_refusal=load)
    app[PLACEMENT] = LocalPlacement(app[REGISTRY])
    app[GATE] = CallGate(app[SETTINGS], app[METRICS])
    app[BACKEND] = EchoBackend()
    outbox = Outbox(tmp_path / "o.sqlite3", None)
    await outbox.open()
    app[OUTBOX] = outbox
    providers.add_routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, app
    finally:
        await client.close()
        await outbox.close()


async def passthru(client: TestClient, query: dict[str, str]) -> int:
    # Exotel's Passthru is a GET with the fields URL-encoded in the query.
    async with client.get("/webhooks/exotel/passthru", params=query, allow_redirects=False) as response:
        return response.status


@pytest.mark.parametrize("refusal", ["draining", "capacity", "overloaded"])
async def test_a_passthru_stream_report_is_stored_and_answered_200_whatever_the_load(
    passthru_app: tuple[TestClient, web.Application], refusal: str
) -> None:
    client, app = passthru_app
    registry = app[REGISTRY]
    if refusal == "draining":
        registry.draining = True
    elif refusal == "capacity":
        registry.capacity = 0
    else:
        app[LOAD_SWITCH].refusal = "overloaded"
    assert registry.refusal() == refusal
    assert [await passthru(client, REPORT) for _ in range(2)] == [200, 200]  # Exotel's retry: one record
    # The JSON form: every field in one object under `Stream`.
    nested = {"StreamSID": "62aa", "Status": "completed", "Duration": "9", "DisconnectedBy": "user"}
    assert await passthru(client, {"CallSid": "CA-pt-1", "Stream": json.dumps(nested)}) == 200
    records = await app[OUTBOX].records("CA-pt-1")
    assert [r.key for r in records] == [
        "CA-pt-1:passthru:6f048d2e897a0d2d4029560f3f541947",
        "CA-pt-1:passthru:62aa",
    ]
    first = records[0].payload
    assert records[0].path == "/v1/calls/CA-pt-1/callbacks" and first["kind"] == "passthru"
    assert first["fields"]["Stream[RecordingUrl]"] == REPORT["Stream[RecordingUrl]"]
    assert first["fields"]["Stream[Duration]"] == "28" and first["fields"]["Stream[DisconnectedBy]"] == "bot"
    # While refusing, a gate request is still refused: only reports are let through.
    assert await passthru(client, {"CallSid": "CA-pt-2", "From": "+919800000001"}) == 302


async def test_a_passthru_without_a_documented_report_field_goes_through_the_gate(
    passthru_app: tuple[TestClient, web.Application],
) -> None:
    client, app = passthru_app
    caller = {"From": "+919811111111", "To": "+918000000002"}
    # The Passthru before the stream may name the coming stream; "Stream…" keys alone are not a report.
    first = {
        "CallSid": "CA-g-1",
        **caller,
        "StreamSid": "MZ1",
        "StreamUrl": "wss://x",
        "EventType": "stream-start",
    }
    second = {"CallSid": "CA-g-2", **caller, "Stream[StreamUrl]": "wss://x", "StreamStatus": "completed"}
    assert await passthru(client, first) == 200
    assert await passthru(client, second) == 302  # the rate limit of 1 call per caller applies
    assert await app[GATE].denied("CA-g-2")
    assert await app[OUTBOX].records() == []
    # Hostile JSON under `Stream` is no report either, and no 500.
    assert await passthru(client, {"CallSid": "CA-g-3", "Stream": "{" + "[" * 2000}) == 200
    assert await passthru(client, {"Stream[Status]": "completed"}) == 400  # a report names its call


RECORDS = ("/events", "/cost", "/conversation", "/callbacks")


# --- a real daemon --------------------------------------------------------------------------------


def outbox_rows(state_dir: Path, *call_sids: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """key -> (state, last_error, payload) for the calls' records in a daemon's outbox file."""
    marks = ",".join("?" * len(call_sids))
    with sqlite3.connect(state_dir / "outbox.sqlite3") as db:
        found = db.execute(
            f"SELECT key, state, last_error, payload FROM records WHERE call_sid IN ({marks})", call_sids
        ).fetchall()
    return {key: (state, error, json.loads(payload)) for key, state, error, payload in found}


async def until(condition: Any, timeout: float = 120.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def stream_session(daemon: DaemonProcess, call_sid: str, speech: bytes | None) -> None:
    """One stream session of a call: the Voicebot webhook, the greeting, maybe one turn, then `stop`."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{daemon.http}/webhooks/exotel/incoming", data={"CallSid": call_sid}) as r:
            assert r.status == 200, daemon.log()
            url = (await r.json())["url"]
    async with SimulatedCaller(url, call_sid=call_sid) as caller:
        assert await caller.listen_until_mark(timeout=60) is not None, daemon.log()
        if speech is not None:
            result = await caller.turn(speech, timeout=60)
            assert result.mark_at is not None, daemon.log()
        await caller.stop()


async def http_status(method: str, url: str, params: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, params=params, allow_redirects=False) as response:
            return response.status


@pytest.mark.e2e
async def test_records_refused_with_401_for_30_s_are_all_delivered_once_afterwards(
    tmp_path: Path, speak: Any
) -> None:
    question = speak("What time do you open on Sunday?", 8000)
    async with FakeNodeApi(record_status=401) as api:
        config = {
            "prompts": {"greeting": "Hello."},
            "backend": {"kind": "node", "url": api.url, "api_key": "node-key", "breaker_reset_s": 1.0},
            # A short cap: once the key is right again, every record goes within a second or two.
            "outbox": {"retry_base_s": 0.2, "retry_cap_s": 1.0},
        }
        # In a thread: the fake backend answers on this loop, also while the daemon starts and stops.
        daemon = await asyncio.to_thread(start_daemon, tmp_path, config)
        try:
            first_401 = asyncio.get_running_loop().time()
            await stream_session(daemon, "CA-dur-1", question)
            await stream_session(daemon, "CA-dur-1", None)  # the stream reconnects: a second session
            await stream_session(daemon, "CA-dur-2", question)
            report = {**REPORT, "CallSid": "CA-dur-1"}
            assert await http_status("GET", f"{daemon.http}/webhooks/exotel/passthru", report) == 200
            state = tmp_path / "state"
            await until(lambda: len(outbox_rows(state, "CA-dur-1", "CA-dur-2")) == 13)
            # 30 s of a wrong key (as the backend sees it) from the first record on.
            await asyncio.sleep(max(0.0, 30.0 - (asyncio.get_running_loop().time() - first_401)))
            rows = outbox_rows(state, "CA-dur-1", "CA-dur-2")
            assert {(s, e) for s, e, _ in rows.values()} == {("pending", "HTTP 401")}, rows
            refused = [
                r for r in api.requests if r.path.startswith("/v1/calls/") and r.path.endswith(RECORDS)
            ]
            assert {r.headers["Idempotency-Key"] for r in refused} == set(rows)
            code, out, err = await cli(daemon.control_socket, "list", "--json")
            assert code == 0, err
            assert {r["key"] for r in json.loads(out)["records"]} >= set(rows)

            api.record_status = 200  # the key is fixed
            await until(
                lambda: (
                    {s for s, _, _ in outbox_rows(state, "CA-dur-1", "CA-dur-2").values()} == {"delivered"}
                )
            )
            await asyncio.sleep(2.0)  # a duplicate delivery would have been made by now
        finally:
            assert await asyncio.to_thread(daemon.terminate) == 0
    assert {key: api.accepted[key] for key in rows} == dict.fromkeys(rows, 1)
    # Two sessions of CA-dur-1 and one of CA-dur-2, each with started, ended, cost and conversation.
    sessions = {(p["session"], key.split(":")[0]) for key, (_, _, p) in rows.items() if "session" in p}
    assert sorted(call for _, call in sessions) == ["CA-dur-1", "CA-dur-1", "CA-dur-2"]
    for session, call_sid in sessions:
        delivered = {k.removeprefix(f"{call_sid}:{session}:") for k in rows if f":{session}:" in k}
        assert delivered == {"event:started", "event:ended", "cost", "conversation"}
        assert api.records[f"{call_sid}:{session}:event:started"]["session"] == session
    (passthru_report,) = [k for k in rows if ":passthru:" in k]
    assert api.records[passthru_report]["fields"]["Stream[RecordingUrl]"] == REPORT["Stream[RecordingUrl]"]


@pytest.mark.e2e
async def test_a_draining_daemon_stores_a_passthru_report_and_still_refuses_new_calls(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"prompts": {"greeting": "Hello."}, "server": {"drain_timeout": 300}})
    try:
        async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-live", call_sid="CA-live") as caller:
            assert await caller.listen_until_mark(timeout=60) is not None
            silence = asyncio.create_task(caller.keep_silent(300))  # a live call keeps the drain going
            daemon.process.send_signal(signal.SIGTERM)
            await until(lambda: "draining" in daemon.log())
            passthru_url = f"{daemon.http}/webhooks/exotel/passthru"
            assert await http_status("GET", passthru_url, {**REPORT, "CallSid": "CA-live"}) == 200
            assert (
                await http_status("GET", passthru_url, {"CallSid": "CA-next", "From": "+919800000009"}) == 302
            )
            silence.cancel()
            await caller.stop()
        assert daemon.process.wait(timeout=120) == 0
    finally:
        daemon.terminate()
    rows = outbox_rows(tmp_path / "state", "CA-live")
    (stored,) = [payload for key, (_, _, payload) in rows.items() if ":passthru:" in key]
    assert (
        stored["fields"]["Stream[Duration]"] == "28" and stored["fields"]["Stream[DisconnectedBy]"] == "bot"
    )
    assert "passthru callback stored" in daemon.log() and "Traceback" not in daemon.log()


async def test_a_stored_callback_keeps_no_credential_fields(
    passthru_app: tuple[TestClient, web.Application],
) -> None:
    client, app = passthru_app
    query = {**REPORT, "CallSid": "CA-pt-tok", "token": "s3cret-in-the-url", "AuthToken": "x"}
    assert await passthru(client, query) == 200
    (record,) = await app[OUTBOX].records("CA-pt-tok")
    assert "s3cret-in-the-url" not in record.payload_text and "AuthToken" not in record.payload["fields"]
    assert record.payload["fields"]["Stream[Duration]"] == "28"
