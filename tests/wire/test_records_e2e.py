"""A real daemon's records: every call's events, cost and conversation in the SQLite outbox; the gate."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gated_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Path]]:
    workdir = tmp_path_factory.mktemp("records")
    process = start_daemon(
        workdir,
        {"prompts": {"greeting": "Hello."}, "calls": {"rate_limit_calls": 2, "rate_limit_window_s": 600}},
    )
    yield process, workdir / "state" / "outbox.sqlite3"
    process.terminate()


def rows(path: Path, call_sid: str) -> dict[str, tuple[str, dict]]:
    """A call's records by key, with the stream session's id taken out of the key (one session here)."""
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT key, state, payload FROM records WHERE call_sid = ?", (call_sid,))
        stored = {key: (state, json.loads(payload)) for key, state, payload in found}
    sessions = {payload["session"] for _, payload in stored.values() if "session" in payload}
    assert len(sessions) <= 1, sessions
    return {
        key.replace(f":{s}:", ":", 1) if (s := next(iter(sessions), "")) else key: row
        for key, row in stored.items()
    }


async def post(url: str, form: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(url, data=form, allow_redirects=False) as r:
        return r.status, await r.text()


async def test_a_call_leaves_its_events_cost_and_conversation_in_the_outbox(
    gated_daemon: tuple[DaemonProcess, Path], speak: Callable[[str, int], bytes]
) -> None:
    daemon, outbox = gated_daemon
    call_sid = "CA-records-1"
    async with SimulatedCaller(f"{daemon.ws}/ws/stream/{call_sid}", call_sid=call_sid) as caller:
        await caller.listen_until_mark(timeout=20)
        result = await caller.turn(speak("Please call me back tomorrow.", 8000), timeout=30)
        assert result.mark_at is not None, daemon.log()
        await caller.stop()
    for _ in range(50):
        stored = rows(outbox, call_sid)
        if f"{call_sid}:conversation" in stored:
            break
        await asyncio.sleep(0.1)
    assert set(stored) == {
        f"{call_sid}:event:started",
        f"{call_sid}:event:ended",
        f"{call_sid}:cost",
        f"{call_sid}:conversation",
    }
    # The echo backend has nowhere to deliver to: the records are kept locally.
    assert {state for state, _ in stored.values()} == {"local"}
    assert stored[f"{call_sid}:event:ended"][1]["outcome"] == "completed"
    cost = stored[f"{call_sid}:cost"][1]
    assert cost["minutes"] == 1 and cost["items"]["telephony"] == 0.02 and cost["ai_requests"] >= 1
    assert cost["tts_seconds"] > 1.0 and cost["items"]["tts"] > 0
    turns = stored[f"{call_sid}:conversation"][1]["turns"]
    assert [turn["role"] for turn in turns] == ["bot", "caller", "bot"]
    assert "call me back" in turns[1]["text"].lower() and turns[2]["heard"].startswith("You said")


async def test_duplicate_status_callbacks_are_stored_once(gated_daemon: tuple[DaemonProcess, Path]) -> None:
    daemon, outbox = gated_daemon
    form = {"CallSid": "CA-records-2", "Status": "completed", "Duration": "42"}
    answers = [await post(f"{daemon.http}/webhooks/exotel/status", form) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert [json.loads(body)["duplicate"] for _, body in answers] == [False, True, True]
    stored = rows(outbox, "CA-records-2")
    assert list(stored) == ["CA-records-2:status:completed"]
    assert stored["CA-records-2:status:completed"][1]["fields"]["Duration"] == "42"


async def test_health_and_metrics_count_the_outbox_rows(gated_daemon: tuple[DaemonProcess, Path]) -> None:
    daemon, _ = gated_daemon
    form = {"CallSid": "CA-records-3", "Status": "completed"}
    assert (await post(f"{daemon.http}/webhooks/exotel/status", form))[0] == 200
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{daemon.http}/health") as response:
            outbox = (await response.json())["outbox"]
        async with session.get(f"{daemon.http}/metrics") as response:
            metrics = await response.text()
    # The echo backend keeps records locally; nothing waits, nothing is parked.
    assert outbox["local"] >= 1 and outbox["pending"] == 0 and outbox["oldest_pending_age_s"] is None
    exported = re.search(r'^voicebridge_outbox_records\{state="local"\} (\S+)$', metrics, re.MULTILINE)
    assert exported is not None and float(exported.group(1)) >= 1


async def test_the_rate_limit_refuses_the_third_call_and_its_stream(
    gated_daemon: tuple[DaemonProcess, Path],
) -> None:
    daemon, _ = gated_daemon
    passthru = f"{daemon.http}/webhooks/exotel/passthru"
    answers = [
        await post(passthru, {"CallSid": f"CA-rate-{n}", "From": "+919811111111", "To": "+918000000002"})
        for n in range(3)
    ]
    assert [status for status, _ in answers] == [200, 200, 302]
    # Another caller is not affected.
    other = await post(passthru, {"CallSid": "CA-rate-x", "From": "+919822222222", "To": "+918000000002"})
    assert other[0] == 200
    # The refused call gets no stream: the socket is closed before any audio is processed.
    async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-rate-2", call_sid="CA-rate-2") as caller:
        await asyncio.wait_for(caller.closed.wait(), 10)
        assert caller.close_code == 1008 and not caller.log.frames
    status, _ = await post(f"{daemon.http}/webhooks/exotel/incoming", {"CallSid": "CA-rate-2"})
    assert status == 403


async def test_a_call_over_its_minutes_is_ended_with_the_goodbye(
    tmp_path: Path, transcribe: Callable[[bytes, int], str]
) -> None:
    daemon = start_daemon(tmp_path, {"prompts": {"greeting": "Hello."}, "calls": {"max_call_minutes": 0.1}})
    try:
        async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-limit", call_sid="CA-limit") as caller:
            await caller.keep_silent(5.0)
            goodbye_from = caller.log.frames[-1].at + 0.01 if caller.log.frames else 0.0
            silence = asyncio.create_task(caller.keep_silent(20.0))
            await asyncio.wait_for(caller.closed.wait(), 20)
            silence.cancel()
        heard = transcribe(caller.log.audio_between(goodbye_from), 8000).lower()
        assert "thank you for calling" in heard, heard  # the goodbye line (Whisper may drop "Goodbye.")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{daemon.http}/api/calls/active") as response:
                assert (await response.json())["calls"] == []
        rows_ = rows(tmp_path / "state" / "outbox.sqlite3", "CA-limit")
        assert rows_["CA-limit:event:ended"][1]["outcome"] == "time_limit"
    finally:
        daemon.terminate()


async def test_local_recording_has_the_caller_left_and_the_bot_right(
    tmp_path: Path, speak: Callable[[str, int], bytes]
) -> None:
    daemon = start_daemon(tmp_path, {"prompts": {"greeting": "Hello."}, "calls": {"record_locally": True}})
    try:
        url = f"{daemon.ws}/ws/stream/CA-recorded"
        async with SimulatedCaller(url, call_sid="CA-recorded") as caller:
            await caller.listen_until_mark(timeout=20)
            result = await caller.turn(speak("Please book a table for two.", 8000), timeout=30)
            assert result.mark_at is not None
            await caller.stop()
        path = tmp_path / "state" / "recordings" / "CA-recorded.wav"
        for _ in range(50):
            if path.exists():
                break
            await asyncio.sleep(0.1)
        with wave.open(str(path)) as recording:
            assert recording.getnchannels() == 2 and recording.getframerate() == 8000
            frames = np.frombuffer(recording.readframes(recording.getnframes()), "<i2").reshape(-1, 2)
        # Speech activity per 20 ms window on each side.
        windows = frames[: len(frames) // 160 * 160].astype(np.float64).reshape(-1, 160, 2)
        active = np.sqrt((windows**2).mean(axis=1)) > 300
        left, right = active[:, 0], active[:, 1]
        assert left.sum() > 40 and right.sum() > 75  # > 0.8 s of caller, > 1.5 s of bot
        first_caller, first_bot = int(np.argmax(left)), int(np.argmax(right))
        assert first_bot < first_caller  # the greeting came first
        assert right[first_caller + 50 :].any()  # the reply after the caller spoke
        assert (left & right).sum() < 0.1 * left.sum()  # one at a time, as on the line
    finally:
        daemon.terminate()
