"""The outbox on a real SQLite file: stored before acknowledged, delivered once, surviving restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from voicebridge.backends.base import DeliveryResult
from voicebridge.config.schema import CostsConfig
from voicebridge.records.call_records import conversation_turns
from voicebridge.records.costs import CallUsage, call_cost
from voicebridge.records.outbox import Outbox


class ScriptedSink:
    """A backend stand-in whose answers the test sets; it remembers every delivery attempt."""

    def __init__(self, answer: DeliveryResult = "delivered") -> None:
        self.answer = answer
        self.attempts: list[tuple[str, str, dict[str, Any]]] = []
        self.delivered = asyncio.Event()

    async def deliver(
        self, path: str, payload: dict[str, Any], idempotency_key: str
    ) -> tuple[DeliveryResult, str]:
        self.attempts.append((idempotency_key, path, payload))
        if self.answer == "delivered":
            self.delivered.set()
        return self.answer, "" if self.answer == "delivered" else "HTTP 503"


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_repeated_key_is_stored_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", sink=None)
    await outbox.open()
    assert await outbox.add("CA1:status:completed", "CA1", "callback", "/v1/calls/CA1/callbacks", {"a": 1})
    assert not await outbox.add(
        "CA1:status:completed", "CA1", "callback", "/v1/calls/CA1/callbacks", {"a": 2}
    )
    (record,) = await outbox.records("CA1")
    assert record.payload == {"a": 1} and record.state == "local"
    await outbox.close()
    # Durable: another connection sees it, in WAL mode.
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1


async def test_retries_until_the_backend_is_back_then_marks_delivered(tmp_path: Path) -> None:
    sink = ScriptedSink("retry")
    outbox = Outbox(tmp_path / "o.sqlite3", sink, retry_base_s=0.01, retry_cap_s=0.05)
    await outbox.open()
    await outbox.add("CA2:cost", "CA2", "cost", "/v1/calls/CA2/cost", {"total": 0.02})
    await wait_for(lambda: len(sink.attempts) >= 3)
    sink.answer = "delivered"
    await asyncio.wait_for(sink.delivered.wait(), 10)
    await asyncio.sleep(0.2)
    (record,) = await outbox.records()
    assert record.state == "delivered" and record.attempts == len(sink.attempts)
    delivered_attempts = [a for a in sink.attempts if a[0] == "CA2:cost"]
    assert delivered_attempts[-1][1] == "/v1/calls/CA2/cost"
    count = len(sink.attempts)
    await asyncio.sleep(0.3)
    assert len(sink.attempts) == count  # delivered rows are not sent again
    await outbox.close()


async def test_pending_rows_survive_a_restart_and_parked_ones_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    down = ScriptedSink("retry")
    first = Outbox(path, down, retry_base_s=60, retry_cap_s=60)
    await first.open()
    await first.add("CA3:conversation", "CA3", "conversation", "/v1/calls/CA3/conversation", {"turns": []})
    await first.add("CA3:bad", "CA3", "event", "/v1/calls/CA3/events", {"event": "x"})
    await wait_for(lambda: len(down.attempts) >= 2)
    await first.close()

    class Picky(ScriptedSink):
        async def deliver(
            self, path: str, payload: dict[str, Any], idempotency_key: str
        ) -> tuple[DeliveryResult, str]:
            self.attempts.append((idempotency_key, path, payload))
            return ("parked", "HTTP 422") if idempotency_key.endswith(":bad") else ("delivered", "")

    up = Picky()
    # A new process with the backend back; the first run's retry time is moved to "now" to save a minute.
    second = Outbox(path, up, retry_base_s=0.01, retry_cap_s=0.01)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE records SET next_attempt_at = 0")  # as if the minute had passed while down
    await second.open()
    await wait_for(lambda: len(up.attempts) >= 2)
    await asyncio.sleep(0.1)
    states = {r.key: r.state for r in await second.records("CA3")}
    assert states == {"CA3:conversation": "delivered", "CA3:bad": "parked"}
    assert await second.counts() == {"delivered": 1, "parked": 1}
    (parked,) = await second.listing(("parked",))
    assert parked.key == "CA3:bad" and parked.last_error == "HTTP 422"
    await second.close()


def test_cost_record_uses_the_configured_rates() -> None:
    usage = CallUsage(duration_s=61.0, tts_seconds=30.0, stt_seconds=20.0, ai_requests=4)
    cost = call_cost(usage, CostsConfig())
    # Two started minutes of telephony at $0.02, half a minute of TTS at $0.01, free STT, 4 AI requests.
    assert cost["items"] == {"telephony": 0.04, "tts": 0.005, "stt": 0.0, "ai": 0.004}
    assert cost["total"] == 0.049 and cost["minutes"] == 2 and cost["currency"] == "USD"


def test_conversation_log_keeps_what_the_caller_heard() -> None:
    transcript = [
        {"role": "bot", "text": "Hello. How can I help?", "at": 1.0},
        {"role": "caller", "text": "Opening hours?", "at": 2.0},
        {"role": "bot", "text": "We open at nine. We close at six.", "at": 3.0},
        {"role": "bot", "heard": "We open at nine.", "at": 4.0, "barge_in": True},
        {"role": "caller", "text": "Thanks.", "at": 5.0},
    ]
    turns = conversation_turns(transcript)
    assert [t["role"] for t in turns] == ["bot", "caller", "bot", "caller"]
    assert turns[0]["heard"] == turns[0]["text"]
    assert turns[2]["text"] == "We open at nine. We close at six." and turns[2]["heard"] == "We open at nine."
