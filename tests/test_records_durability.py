"""Records survive: the outbox's retry rule, parked records, per-session keys, passthru reports, XDG state."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.node_api import FakeNodeApi
from voicebridge.backends.base import CallInfo
from voicebridge.backends.http import BackendHttp
from voicebridge.backends.node import NodeBackend
from voicebridge.config import BackendConfig, Settings
from voicebridge.daemon.control import ControlServer
from voicebridge.daemon.costs import CallUsage
from voicebridge.daemon.outbox import DeliveryResult, Outbox
from voicebridge.daemon.records import CallRecorder
from voicebridge.daemon.registry import CallRegistry


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


@pytest.mark.parametrize("status", [401, 403, 404, 405, 408, 409, 410, 429, 500, 502, 503, 504])
async def test_node_delivery_retries_every_answer_that_may_yet_succeed(status: int) -> None:
    async with FakeNodeApi(record_status=status) as api:
        node = NodeBackend(_cfg(api), BackendHttp(_cfg(api)))
        await node.start()
        try:
            result = await node.deliver("/v1/calls/CA-1/events", {"event": "started"}, "CA-1:s:event:started")
        finally:
            await node.close()
    assert tuple(result) == ("retry", f"HTTP {status}")


@pytest.mark.parametrize("status", [400, 413, 422])
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
