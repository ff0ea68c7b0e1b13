"""A real daemon with `backend.kind = "echo"` and a `[report] url`: each call's report reaches a local
receiver once, signed so that the documented verifier accepts it and refuses it tampered, also when the
receiver is down for a while."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.report_receiver import Received, ReportReceiver, documented_python_verifier
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, free_port, start_daemon

pytestmark = pytest.mark.e2e

SECRET = "wire-test-report-secret"


@pytest.fixture(scope="module")
def reporting_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, int]]:
    """An echo daemon reporting to a receiver port each test serves itself (the daemon outlives them)."""
    port = free_port()
    process = start_daemon(
        tmp_path_factory.mktemp("report"),
        {
            "backend": {"kind": "echo"},
            "prompts": {"greeting": "Hello."},
            "calls": {"record_locally": True},
            "report": {"url": f"http://127.0.0.1:{port}/report", "secret": SECRET},
            # Short, so a receiver answering 503 a few times still gets the report within the test.
            "outbox": {"retry_base_s": 0.2, "retry_cap_s": 0.5},
        },
    )
    yield process, port
    process.terminate()


def verifies(seen: Received, body: bytes | None = None) -> bool:
    verify = documented_python_verifier()
    timestamp, signature = seen.headers["X-Voicebridge-Timestamp"], seen.headers["X-Voicebridge-Signature"]
    return verify(SECRET, timestamp, signature, seen.body if body is None else body)


async def one_call(daemon: DaemonProcess, call_sid: str, speak: Callable[[str, int], bytes]) -> None:
    async with SimulatedCaller(f"{daemon.ws}/ws/stream/{call_sid}", call_sid=call_sid) as caller:
        await caller.listen_until_mark(timeout=20)
        result = await caller.turn(speak("Please call me back tomorrow.", 8000), timeout=30)
        assert result.mark_at is not None, daemon.log()
        for digit in "42#":
            await caller.dtmf(digit)
        await asyncio.sleep(1.0)
        await caller.stop()


async def reports_of(receiver: ReportReceiver, call_sid: str, settle_s: float = 1.5) -> list[Received]:
    """The requests that carried this call's report, once one was delivered and a while has passed (a
    second delivery would show up in it)."""
    for _ in range(300):
        if any(json.loads(seen.body)["call_sid"] == call_sid for seen in receiver.delivered()):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(settle_s)
    return [seen for seen in receiver.received if json.loads(seen.body)["call_sid"] == call_sid]


async def test_an_echo_call_sends_one_signed_report(
    reporting_daemon: tuple[DaemonProcess, int], speak: Callable[[str, int], bytes]
) -> None:
    daemon, port = reporting_daemon
    async with ReportReceiver(port=port) as receiver:
        await one_call(daemon, "CA-report-1", speak)
        seen = await reports_of(receiver, "CA-report-1")
    assert len(seen) == 1 and seen[0].answered == 200, daemon.log()
    (report,) = seen
    assert verifies(report)
    assert not verifies(report, report.body.replace(b"CA-report-1", b"CA-report-2"))  # tampered
    payload = json.loads(report.body)
    assert report.headers["Idempotency-Key"] == payload["report_id"]
    assert payload["call_sid"] == "CA-report-1" and payload["outcome"] == "completed"
    assert payload["provider"] == "exotel" and payload["context"] == {}
    turns = payload["turns"]
    assert [turn["role"] for turn in turns][:3] == ["bot", "caller", "bot"]
    assert "call me back" in turns[1]["text"].lower() and turns[2]["heard"].startswith("You said")
    assert [press["digit"] for press in payload["dtmf"]] == ["4", "2", "#"]
    assert payload["cost"]["ai_requests"] >= 1 and payload["duration_s"] > 1
    assert payload["recording_path"] and await asyncio.to_thread(Path(payload["recording_path"]).is_file)


async def test_a_receiver_down_for_a_while_gets_the_report_once(
    reporting_daemon: tuple[DaemonProcess, int], speak: Callable[[str, int], bytes]
) -> None:
    daemon, port = reporting_daemon
    async with ReportReceiver(port=port, statuses=[503, 503, 503]) as receiver:
        await one_call(daemon, "CA-report-2", speak)
        seen = await reports_of(receiver, "CA-report-2")
    assert [attempt.answered for attempt in seen] == [503, 503, 503, 200], daemon.log()
    assert len({attempt.headers["Idempotency-Key"] for attempt in seen}) == 1
    assert len({attempt.body for attempt in seen}) == 1  # the same report each time
    assert all(verifies(attempt) for attempt in seen)  # each attempt signed afresh
