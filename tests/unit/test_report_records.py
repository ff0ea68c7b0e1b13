"""The report as a record: stored once per call with what was heard, and routed by the outbox to its own
sink (never to the backend's), with or without a record-taking backend."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from tests.unit.test_outbox import ScriptedSink, wait_for
from voicebridge.backends.base import CallInfo, DeliveryResult
from voicebridge.config.schema import ReportConfig, Settings
from voicebridge.records.call_records import CallRecorder
from voicebridge.records.costs import CallUsage
from voicebridge.records.outbox import Outbox
from voicebridge.records.outbox_rows import seconds_to_next_due

INFO = CallInfo(
    call_sid="CA-R",
    provider="exotel",
    from_number="+919811111111",
    to_number="+918047491899",
    context=MappingProxyType({"order_id": "A17"}),
)
REPORTING = Settings(report=ReportConfig(url="https://crm.example.com/r", secret="s" * 16))
TRANSCRIPT = [
    {"role": "bot", "text": "Hello.", "at": 1.0},
    {"role": "caller", "text": "Book me in.", "at": 2.0},
    {"role": "bot", "text": "Sure. Which day suits you best?", "at": 3.0},
    {"role": "caller", "barge_in": True, "heard": "Sure.", "at": 3.5},
    {"role": "caller", "dtmf": "4", "at": 4.0},
    {"role": "caller", "dtmf": "#", "at": 4.2},
]


def states(path: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return {
            key.split(":")[-1]: (kind, state)
            for key, kind, state in db.execute("SELECT key, kind, state FROM records")
        }


async def test_one_report_per_call_with_heard_turns_dtmf_cost_and_recording(tmp_path: Path) -> None:
    report_sink = ScriptedSink()
    outbox = Outbox(tmp_path / "o.sqlite3", None, routes={"report": report_sink}, retry_base_s=0.01)
    await outbox.open()
    try:
        recorder = CallRecorder(outbox, REPORTING, INFO)
        await recorder.ended(
            "completed",
            CallUsage(duration_s=61.0, tts_seconds=6.0, ai_requests=2),
            TRANSCRIPT,
            started_at=1000.0,
            recording_path="/var/lib/voicebridge/recordings/CA-R.wav",
        )
        await wait_for(lambda: states(tmp_path / "o.sqlite3").get("report") == ("report", "delivered"))
    finally:
        await outbox.close()
    ((key, path, report),) = report_sink.attempts
    assert key == f"CA-R:{recorder.session}:report" == report["report_id"] and path == "report"
    assert {k: report[k] for k in ("call_sid", "provider", "from", "to", "outcome", "context")} == {
        "call_sid": "CA-R",
        "provider": "exotel",
        "from": "+919811111111",
        "to": "+918047491899",
        "outcome": "completed",
        "context": {"order_id": "A17"},
    }
    assert (report["started_at"], report["ended_at"], report["duration_s"]) == (1000.0, 1061.0, 61.0)
    assert [(t["role"], t["text"], t.get("heard")) for t in report["turns"]] == [
        ("bot", "Hello.", "Hello."),
        ("caller", "Book me in.", None),
        ("bot", "Sure. Which day suits you best?", "Sure."),  # cut to what the caller heard
    ]
    assert report["dtmf"] == [{"digit": "4", "at": 4.0}, {"digit": "#", "at": 4.2}]
    assert report["cost"]["minutes"] == 2 and report["cost"]["ai_requests"] == 2
    assert report["recording_path"] == "/var/lib/voicebridge/recordings/CA-R.wav"
    # Without a record-taking backend the call's own records stay local; only the report went out.
    assert states(tmp_path / "o.sqlite3") == {
        "ended": ("event", "local"),
        "cost": ("cost", "local"),
        "conversation": ("conversation", "local"),
        "report": ("report", "delivered"),
    }


async def test_no_report_url_no_report(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", None, routes={"report": None})
    await outbox.open()
    try:
        await CallRecorder(outbox, Settings(), INFO).ended("completed", CallUsage(duration_s=3.0), TRANSCRIPT)
    finally:
        await outbox.close()
    assert "report" not in states(tmp_path / "o.sqlite3")


async def test_the_backend_sink_gets_its_records_and_the_report_sink_the_report(tmp_path: Path) -> None:
    backend, reports = ScriptedSink(), ScriptedSink()
    outbox = Outbox(tmp_path / "o.sqlite3", backend, routes={"report": reports}, retry_base_s=0.01)
    await outbox.open()
    try:
        await CallRecorder(outbox, REPORTING, INFO).ended("completed", CallUsage(duration_s=3.0), TRANSCRIPT)
        await wait_for(lambda: len(backend.attempts) == 3 and len(reports.attempts) == 1)
    finally:
        await outbox.close()
    assert {path.rsplit("/", 1)[-1] for _, path, _ in backend.attempts} == {"events", "cost", "conversation"}
    assert [path for _, path, _ in reports.attempts] == ["report"]


async def test_a_pending_report_is_kept_not_sent_to_the_backend_once_report_url_is_gone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.sqlite3"
    down = ScriptedSink("retry")
    first = Outbox(path, None, routes={"report": down}, retry_base_s=60, retry_cap_s=60)
    await first.open()
    await first.add("CA-R:s:report", "CA-R", "report", "report", {"call_sid": "CA-R"})
    await wait_for(lambda: len(down.attempts) == 1)
    await first.close()
    # Restarted with a node backend and no [report] url: the report is not the backend's to take.
    backend = ScriptedSink()
    second = Outbox(path, backend, routes={"report": None}, retry_base_s=0.01, retry_cap_s=0.01)
    await second.open()
    try:
        await second.add("CA-R:s:cost", "CA-R", "cost", "/v1/calls/CA-R/cost", {"total": 1})
        await wait_for(lambda: len(backend.attempts) == 1)
        await second.retry(every="parked")
        await asyncio.sleep(0.2)
        assert [key for key, _, _ in backend.attempts] == ["CA-R:s:cost"]
        assert states(path)["report"] == ("report", "pending")
        assert await second.deliver_due() == 0 and len(backend.attempts) == 1
        # Nothing this config can deliver is due: the delivery loop sleeps instead of spinning on the row.
        with sqlite3.connect(path) as db:
            assert seconds_to_next_due(db, *second._deliverable()) is None
    finally:
        await second.close()


async def test_retry_queues_only_what_a_sink_takes(tmp_path: Path) -> None:
    reports = ScriptedSink("retry")
    outbox = Outbox(tmp_path / "o.sqlite3", None, routes={"report": reports}, retry_base_s=60)
    await outbox.open()
    try:
        await outbox.add("CA-R:s:cost", "CA-R", "cost", "/v1/calls/CA-R/cost", {"total": 1})
        assert states(tmp_path / "o.sqlite3")["cost"] == ("cost", "local")
        with pytest.raises(ValueError, match="nowhere to go"):
            await outbox.retry("CA-R:s:cost")
        assert await outbox.retry(every="local") == 0  # the echo backend's records stay local
        assert states(tmp_path / "o.sqlite3")["cost"] == ("cost", "local")
    finally:
        await outbox.close()


async def test_an_outbox_with_no_sink_at_all_delivers_nothing(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", None, routes={"report": None})
    await outbox.open()
    try:
        await outbox.add("CA-R:s:report", "CA-R", "report", "report", {"call_sid": "CA-R"})
        assert await outbox.deliver_due() == 0
        assert states(tmp_path / "o.sqlite3")["report"] == ("report", "local")
    finally:
        await outbox.close()


class HangingSink(ScriptedSink):
    """A report receiver that never answers."""

    async def deliver(
        self, path: str, payload: dict[str, Any], idempotency_key: str
    ) -> tuple[DeliveryResult, str]:
        self.attempts.append((idempotency_key, path, payload))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_hanging_report_receiver_does_not_hold_up_the_backends_records(tmp_path: Path) -> None:
    backend, reports = ScriptedSink(), HangingSink()
    outbox = Outbox(tmp_path / "o.sqlite3", backend, routes={"report": reports}, delivery_timeout_s=60)
    await outbox.open()
    try:
        for n in range(3):  # stored first: a single queue would try them before the cost record
            await outbox.add(f"CA-{n}:s:report", f"CA-{n}", "report", "report", {"n": n})
        await outbox.add("CA-R:s:cost", "CA-R", "cost", "/v1/calls/CA-R/cost", {"total": 1})
        await asyncio.wait_for(backend.delivered.wait(), 3)
        assert len(reports.attempts) == 1  # still waiting on its first report
    finally:
        await outbox.close()
