"""Records after review (#14 review): nothing lost on a failed insert, safe keys, a delivery loop that never
dies, one bad row never breaking the others, and counts an operator can see."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.node_api import FakeNodeApi
from voicebridge.admission.registry import CallRegistry
from voicebridge.backends.base import CallInfo, DeliveryResult
from voicebridge.backends.http import BackendHttp
from voicebridge.backends.node import NodeBackend
from voicebridge.config.schema import BackendConfig, Settings
from voicebridge.records.call_records import CallRecorder
from voicebridge.records.callbacks import callback_key, report_key
from voicebridge.records.outbox import Outbox
from voicebridge.server.control_outbox import outbox_operation
from voicebridge.server.metrics import Metrics

SAFE_KEY = re.compile(r"[A-Za-z0-9_:-]+")


async def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Sink:
    """A record sink whose behaviour the test sets: an answer, an exception, or a hang."""

    def __init__(self, answer: DeliveryResult = "delivered") -> None:
        self.answer = answer
        self.raises: Exception | None = None
        self.hang_first = False
        self.attempts: list[str] = []

    async def deliver(
        self, path: str, payload: dict[str, Any], idempotency_key: str
    ) -> tuple[DeliveryResult, str]:
        self.attempts.append(idempotency_key)
        if self.hang_first and len(self.attempts) == 1:
            await asyncio.Event().wait()
        if self.raises is not None:
            raise self.raises
        return self.answer, "" if self.answer == "delivered" else "HTTP 503"


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- 2: a failed insert loses nothing silently, and never logs the payload ----------------------------


async def test_a_lone_surrogate_in_a_transcript_is_stored(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite3", None)
    await outbox.open()
    try:
        text = "half a pair: \ud800 then more"
        assert await outbox.add("CA-1:s:conversation", "CA-1", "conversation", "/p", {"text": text})
        (record,) = await outbox.records("CA-1")
        assert record.payload == {"text": text}
    finally:
        await outbox.close()


class FlakyOutbox(Outbox):
    """An outbox whose first `failures` inserts fail as SQLite fails when another writer holds the file."""

    def __init__(self, path: Path, failures: int, metrics: Metrics) -> None:
        super().__init__(path, None, metrics=metrics)
        self.failures = failures

    def _insert_blocking(self, *args: Any) -> bool:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return super()._insert_blocking(*args)


def recorder(outbox: Outbox) -> CallRecorder:
    info = CallInfo(
        call_sid="CA-7", from_number="+919999000111", to_number="+912200000000", provider="exotel"
    )
    return CallRecorder(outbox, Settings(), info)


async def test_a_transiently_locked_database_is_retried_and_the_record_kept(tmp_path: Path) -> None:
    metrics = Metrics()
    outbox = FlakyOutbox(tmp_path / "o.sqlite3", 2, metrics)
    await outbox.open()
    try:
        await recorder(outbox).started()
        (record,) = await outbox.records("CA-7")
        assert record.payload["from"] == "+919999000111"
        assert sample(metrics, "voicebridge_records_unstored_total") == 0
    finally:
        await outbox.close()


async def test_a_record_that_cannot_be_stored_is_one_counted_error_line_with_the_key_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    outbox = FlakyOutbox(tmp_path / "o.sqlite3", 1000, metrics)
    await outbox.open()
    try:
        caplog.set_level(logging.WARNING)
        await recorder(outbox).started()
    finally:
        await outbox.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and ":event:started" in errors[0].getMessage()
    assert all("+919999000111" not in r.getMessage() for r in caplog.records)  # never the payload
    assert sample(metrics, "voicebridge_records_unstored_total") == 1


# --- 3: keys from outside values are safe; a sink that raises parks the row ----------------------------


def test_keys_built_from_outside_values_hold_only_safe_characters() -> None:
    assert callback_key("CA-1", "status", {"Status": "completed"}) == "CA-1:status:completed"
    hostile = callback_key("CA-1", "status", {"Status": "completed\r\nX-Evil: 1"})
    recording = callback_key("CA-1", "recording", {"RecordingUrl": "https://r.example/a b\n.mp3"})
    report = report_key("CA-1", {"Stream[StreamSID]": "x" * 65, "Stream[Status]": "completed"})
    for key in (hostile, recording, report):
        assert SAFE_KEY.fullmatch(key) and len(key) < 120, key
    assert hostile != callback_key("CA-1", "status", {"Status": "completed\r\nX-Evil: 2"})
    assert report_key("CA-1", {"Stream[StreamSID]": "62aa"}) == "CA-1:passthru:62aa"


async def test_node_delivery_parks_a_record_whose_key_cannot_be_sent() -> None:
    async with FakeNodeApi() as api:
        config = BackendConfig(kind="node", url=api.url, api_key="k", breaker_failures=1000)
        node = NodeBackend(config, BackendHttp(config))
        await node.start()
        try:
            result, why = await node.deliver("/v1/calls/CA-1/cost", {"total": 1}, "CA-1:status:a\nb")
        finally:
            await node.close()
    assert result == "parked" and "ValueError" in why


async def test_a_sink_that_keeps_raising_for_a_record_parks_it_with_the_reason(tmp_path: Path) -> None:
    sink = Sink()
    sink.raises = ValueError("Newline or carriage return character detected in HTTP header")
    outbox = Outbox(tmp_path / "o.sqlite3", sink, retry_base_s=0.001, retry_cap_s=0.005)
    await outbox.open()
    try:
        await outbox.add("CA-3:s:cost", "CA-3", "cost", "/v1/calls/CA-3/cost", {"total": 1})

        async def settled() -> bool:
            (record,) = await outbox.records("CA-3")
            return record.state == "parked" or len(sink.attempts) > 10

        await wait_for(settled)
        (record,) = await outbox.records("CA-3")
        assert record.state == "parked" and "ValueError" in record.last_error
        assert len(sink.attempts) == record.attempts <= 5
    finally:
        await outbox.close()


# --- 4: the delivery task survives anything and a hanging sink cannot stall it ----------------------


async def test_the_delivery_task_survives_an_unexpected_error_and_keeps_delivering(tmp_path: Path) -> None:
    sink = Sink()
    outbox = Outbox(tmp_path / "o.sqlite3", sink, retry_base_s=0.001, retry_cap_s=0.005)
    await outbox.open()
    try:
        real_query = outbox._query
        broken = {"left": 1}

        def query_failing_once(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            if broken["left"] and "next_attempt_at <=" in sql:
                broken["left"] -= 1
                raise RuntimeError("a bug in one pass")
            return real_query(sql, params)

        outbox._query = query_failing_once  # type: ignore[method-assign]
        await outbox.add("CA-4:s:cost", "CA-4", "cost", "/v1/calls/CA-4/cost", {"total": 1})

        async def delivered() -> bool:
            return (await outbox.records("CA-4"))[0].state == "delivered"

        await wait_for(delivered)
        assert broken["left"] == 0
    finally:
        await outbox.close()


async def test_a_hanging_delivery_is_cut_and_retried(tmp_path: Path) -> None:
    sink = Sink()
    sink.hang_first = True
    outbox = Outbox(
        tmp_path / "o.sqlite3", sink, retry_base_s=0.001, retry_cap_s=0.005, delivery_timeout_s=0.2
    )
    await outbox.open()
    try:
        await outbox.add("CA-5:s:cost", "CA-5", "cost", "/v1/calls/CA-5/cost", {"total": 1})

        async def delivered() -> bool:
            return (await outbox.records("CA-5"))[0].state == "delivered"

        await wait_for(delivered)
        assert len(sink.attempts) == 2
    finally:
        await outbox.close()


# --- 5: one corrupt payload breaks nothing else ----------------------------------------------------


async def test_a_corrupt_payload_is_parked_and_listing_still_works(tmp_path: Path) -> None:
    sink = Sink("retry")
    outbox = Outbox(tmp_path / "o.sqlite3", sink, retry_base_s=0.001, retry_cap_s=0.005)
    await outbox.open()
    try:
        for n in range(2):
            await outbox.add(f"CA-6:s:{n}", "CA-6", "event", "/v1/calls/CA-6/events", {"n": n})
        with sqlite3.connect(tmp_path / "o.sqlite3") as db:
            db.execute("UPDATE records SET payload = '{not json' WHERE key = 'CA-6:s:0'")

        async def parked() -> bool:
            return (await outbox.records("CA-6"))[0].state == "parked"

        await wait_for(parked)
        listed = await outbox_operation(outbox, "outbox_list", {"state": "all"})
        assert [r["state"] for r in listed["records"]] == ["parked", "pending"]
        assert listed["records"][0]["last_error"] == "payload unreadable"
        shown = await outbox_operation(outbox, "outbox_show", {"record": "CA-6:s:0"})
        assert shown["payload"] is None and shown["last_error"] == "payload unreadable"
        good = await outbox_operation(outbox, "outbox_show", {"record": "CA-6:s:1"})
        assert good["payload"] == {"n": 1}
        # Tried at most once, before it was damaged; never again with a misleading error.
        assert sink.attempts.count("CA-6:s:0") <= 1
    finally:
        await outbox.close()


# --- 6: counts visible in /metrics and /health, without SQLite on the loop ----------------------------


async def test_outbox_counts_are_exported_and_summarised(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = Sink("retry")
    outbox = Outbox(tmp_path / "o.sqlite3", sink, retry_base_s=5, retry_cap_s=10, metrics=metrics)
    await outbox.open()
    try:
        for n in range(3):
            await outbox.add(f"CA-8:s:{n}", "CA-8", "event", "/v1/calls/CA-8/events", {"n": n})
        assert sample(metrics, "voicebridge_outbox_records", state="pending") == 3
        assert sample(metrics, "voicebridge_outbox_records", state="parked") == 0
        summary = outbox.health()
        assert summary["pending"] == 3 and summary["oldest_pending_age_s"] >= 0
    finally:
        await outbox.close()


# --- 8: records kept locally can be sent once a backend takes them ----------------------------------


async def test_a_local_record_is_queued_by_retry_once_a_backend_takes_records(tmp_path: Path) -> None:
    local = Outbox(tmp_path / "o.sqlite3", None)
    await local.open()
    await local.add("CA-L:s:cost", "CA-L", "cost", "/v1/calls/CA-L/cost", {"total": 1})
    await local.add("CA-L:s:event:started", "CA-L", "event", "/v1/calls/CA-L/events", {"event": "started"})
    with pytest.raises(ValueError, match="backend"):
        await local.retry("CA-L:s:cost")
    await local.close()
    sink = Sink()
    outbox = Outbox(tmp_path / "o.sqlite3", sink)
    await outbox.open()
    try:
        assert {r.state for r in await outbox.records("CA-L")} == {"local"}  # not sent unasked
        assert await outbox.retry("CA-L:s:cost") == 1
        assert await outbox_operation(outbox, "outbox_retry", {"all_local": True}) == {"queued": 1}

        async def delivered() -> bool:
            return {r.state for r in await outbox.records("CA-L")} == {"delivered"}

        await wait_for(delivered)
    finally:
        await outbox.close()


# --- 16: every passthru report of a call is kept in memory, not just the first ------------------------


def test_the_registry_keeps_each_passthru_report_of_a_call() -> None:
    facts = CallRegistry(1).facts
    first = {"Stream[StreamSID]": "s1", "Stream[Status]": "completed"}
    second = {"Stream[StreamSID]": "s2", "Stream[Status]": "completed"}
    assert facts.record_callback("CA-P", "passthru", first, report_key("CA-P", first))
    assert facts.record_callback("CA-P", "passthru", second, report_key("CA-P", second))
    assert not facts.record_callback("CA-P", "passthru", second, report_key("CA-P", second))
    assert [c.get("Stream[StreamSID]") for c in facts.callbacks("CA-P")] == ["s1", "s2"]
