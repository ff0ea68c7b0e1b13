"""End to end: a real `voicebridge serve` process over a real WebSocket, in Exotel and Twilio protocols."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.speech.wer import word_error_rate

pytestmark = pytest.mark.e2e

SENTENCE = "Please book an appointment for tomorrow morning."
# The original one-model-per-call design, which only the benchmark serves.
NAIVE_DAEMON = (str(Path(__file__).resolve().parents[2] / "bench" / "naive_daemon.py"),)


async def get_json(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def metrics_text(daemon: DaemonProcess) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{daemon.http}/metrics") as response:
        return await response.text()


def metric_value(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (r"\{" + labels + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def wait_until_gone(daemon: DaemonProcess, call_sid: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = await get_json(f"{daemon.http}/api/calls/active")
        if all(call["call_sid"] != call_sid for call in body["calls"]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{call_sid} still active")


async def exotel_stream_url(daemon: DaemonProcess, call_sid: str) -> str:
    async with aiohttp.ClientSession() as session:
        form = {"CallSid": call_sid, "From": "+919800000001", "To": "+918000000002"}
        async with session.post(f"{daemon.http}/webhooks/exotel/incoming", data=form) as response:
            assert response.status == 200
            return (await response.json())["url"]


async def twilio_stream_url(daemon: DaemonProcess, call_sid: str) -> str:
    async with aiohttp.ClientSession() as session:
        form = {"CallSid": call_sid, "From": "+15550000001", "To": "+15550000002"}
        async with session.post(f"{daemon.http}/webhooks/twilio/incoming", data=form) as response:
            assert response.status == 200
            twiml = await response.text()
    assert "<Connect><Stream" in twiml and 'name="From"' in twiml
    return re.search(r'url="([^"]+)"', twiml).group(1)


@pytest.mark.parametrize("provider", ["exotel", "twilio"])
async def test_call_end_to_end(
    daemon: DaemonProcess,
    provider: str,
    speak: Callable[[str, int], bytes],
    transcribe: Callable[[bytes, int], str],
) -> None:
    call_sid = f"CA-e2e-{provider}"
    url = await (exotel_stream_url if provider == "exotel" else twilio_stream_url)(daemon, call_sid)
    assert url.startswith(f"{daemon.ws}/ws/stream/{call_sid}")
    before = metric_value(
        await metrics_text(daemon), "voicebridge_calls_total", f'outcome="completed",provider="{provider}"'
    )

    async with SimulatedCaller(url, provider=provider, call_sid=call_sid) as caller:
        greeting_mark = await caller.listen_until_mark(timeout=20)
        assert greeting_mark is not None, daemon.log()
        greeting = caller.log.audio_between(0, greeting_mark)
        assert len(greeting) > 8000 * 2 * 0.5  # at least half a second of greeting audio

        _, active = await get_json(f"{daemon.http}/api/calls/active")
        (snapshot,) = [c for c in active["calls"] if c["call_sid"] == call_sid]
        assert snapshot["provider"] == provider and snapshot["from"].endswith("0001")

        result = await caller.turn(speak(SENTENCE, 8000), timeout=30)
        assert result.mark_at is not None, daemon.log()
        assert result.first_reply_frame_at is not None and result.latency is not None
        heard = transcribe(result.reply_pcm16, 8000)
        assert word_error_rate("you said " + SENTENCE, heard) <= 0.25, heard

        if provider == "exotel":
            sizes = [frame.wire_bytes for frame in caller.log.frames]
            assert sizes and all(size % 320 == 0 and size >= 3200 for size in sizes), sizes
        # A mark follows the reply's last frame.
        last_frame = max(frame.at for frame in caller.log.frames)
        assert result.mark_at >= last_frame
        await caller.stop()

    await wait_until_gone(daemon, call_sid)
    after = metric_value(
        await metrics_text(daemon), "voicebridge_calls_total", f'outcome="completed",provider="{provider}"'
    )
    assert after == before + 1


async def test_barge_in_clears_and_blip_does_not(
    daemon: DaemonProcess, speak: Callable[[str, int], bytes]
) -> None:
    long_question = (
        "Can you tell me everything about the opening hours of the clinic on weekends and holidays?"
    )
    interruption = speak("Stop, wait a moment please.", 8000)
    async with SimulatedCaller(await exotel_stream_url(daemon, "CA-barge"), call_sid="CA-barge") as caller:
        await caller.listen_until_mark(timeout=20)

        # A 150 ms blip during the reply must not interrupt it.
        speech_end = await caller.say(speak(long_question, 8000), trailing_silence_s=0.0)
        first = await _first_frame_after(caller, speech_end)
        await caller.stream(interruption[: int(8000 * 0.15) * 2])
        mark_at = await caller.listen_until_mark(timeout=30)
        assert mark_at is not None and not caller.log.clears

        # Real speech during the next reply does interrupt it: `clear`, then that reply stops.
        speech_end = await caller.say(speak(long_question, 8000), trailing_silence_s=0.0)
        first = await _first_frame_after(caller, speech_end)
        await caller.stream(interruption)
        silence = asyncio.create_task(caller.keep_silent(1.0))
        await asyncio.sleep(0.6)
        assert caller.log.clears, "no clear after barge-in"
        clear_at = caller.log.clears[0]
        assert first < clear_at
        # Nothing of the interrupted reply arrives after the clear (a new reply needs the
        # caller's end-of-turn silence first, so the next ~0.4 s must be quiet).
        assert not caller.log.audio_between(clear_at + 0.05, clear_at + 0.4)
        await silence
        await caller.stop()
    text = await metrics_text(daemon)
    assert metric_value(text, "voicebridge_barge_ins_total") >= 1


async def _first_frame_after(caller: SimulatedCaller, moment: float, timeout: float = 15.0) -> float:
    silence = asyncio.create_task(caller.keep_silent(timeout))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (at := caller.log.first_frame_after(moment)) is not None:
                return at
            await asyncio.sleep(0.02)
        raise AssertionError("no reply audio")
    finally:
        silence.cancel()
        await asyncio.gather(silence, return_exceptions=True)


async def test_bad_input_is_counted_and_the_call_goes_on(
    daemon: DaemonProcess, speak: Callable[[str, int], bytes], transcribe: Callable[[bytes, int], str]
) -> None:
    # Media before start on a fresh socket: rejected, counted, and the daemon stays healthy.
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{daemon.ws}/ws/stream") as ws:
        await ws.send_str(json.dumps({"event": "media", "media": {"payload": "AAAA"}}))
        await ws.send_str("{not json")
        await ws.close()

    async with SimulatedCaller(await exotel_stream_url(daemon, "CA-bad"), call_sid="CA-bad") as caller:
        await caller.listen_until_mark(timeout=20)
        stream_sid = caller.wire.stream_sid
        await caller.send_text("{this is not json")
        await caller.send_text(
            json.dumps({"event": "media", "stream_sid": stream_sid, "media": {"payload": "@@not-base64@@"}})
        )
        await caller.send_text(json.dumps({"event": "karaoke", "stream_sid": stream_sid}))
        await caller.send_bytes(b"\x00\x01binary")
        odd = base64.b64encode(b"\x01\x02\x03").decode()
        await caller.send_text(
            json.dumps({"event": "media", "stream_sid": stream_sid, "media": {"payload": odd}})
        )
        # The call still works after all that.
        result = await caller.turn(speak("What time do you open?", 8000), timeout=30)
        assert result.mark_at is not None
        assert "open" in transcribe(result.reply_pcm16, 8000).lower()
        await caller.stop()

    text = await metrics_text(daemon)
    for kind in ("malformed_json", "bad_base64", "unknown_event", "binary_frame", "media_before_start"):
        assert metric_value(text, "voicebridge_protocol_rejections_total", f'kind="{kind}"') >= 1, kind
    status, health = await get_json(f"{daemon.http}/health")
    assert status == 200 and health["status"] == "ok"


async def test_health_ready_and_management(daemon: DaemonProcess) -> None:
    status, health = await get_json(f"{daemon.http}/health")
    assert status == 200
    assert health["engines"]["stt"]["name"] == "whisper" and health["engines"]["tts"]["name"] == "piper"
    assert health["model_loads"] == {"whisper": 1, "piper": 1}
    assert (await get_json(f"{daemon.http}/ready"))[0] == 200
    assert (await get_json(f"{daemon.http}/live"))[0] == 200
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{daemon.http}/api/calls/CA-none/hangup") as response:
            assert response.status == 404
        async with session.post(
            f"{daemon.http}/webhooks/exotel/passthru", data={"CallSid": "CA-p"}
        ) as response:
            assert response.status == 200
        for _ in range(2):  # Exotel retries: stored once
            form = {"CallSid": "CA-s", "Status": "completed", "RecordingUrl": "https://rec/1.mp3"}
            async with session.post(f"{daemon.http}/webhooks/exotel/status", data=form) as response:
                body = await response.json()
        assert body["duplicate"] is True


async def test_hangup_and_transfer_over_the_management_api(daemon: DaemonProcess) -> None:
    async with SimulatedCaller(await exotel_stream_url(daemon, "CA-xfer"), call_sid="CA-xfer") as caller:
        await caller.listen_until_mark(timeout=20)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{daemon.http}/api/calls/CA-xfer/transfer", json={"number": "+919811112222"}
            ) as r:
                assert r.status == 200, await r.text()
            await asyncio.wait_for(caller.closed.wait(), 15)
            async with session.get(
                f"{daemon.http}/webhooks/exotel/transfer", params={"CallSid": "CA-xfer"}
            ) as r:
                assert r.status == 200
                assert (await r.json())["destination"]["numbers"] == ["+919811112222"]
    async with SimulatedCaller(await exotel_stream_url(daemon, "CA-hang"), call_sid="CA-hang") as caller:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{daemon.http}/api/calls/CA-hang/hangup") as r:
                assert r.status == 200
        await asyncio.wait_for(caller.closed.wait(), 10)
    await wait_until_gone(daemon, "CA-hang")


async def test_capacity_refuses_the_extra_call(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"server": {"max_concurrent_calls": 1}, "prompts": {"busy": "Busy."}})
    try:
        async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-one", call_sid="CA-one") as first:
            await asyncio.sleep(0.5)
            async with aiohttp.ClientSession() as session:
                async with session.get(
                    f"{daemon.http}/webhooks/exotel/passthru", params={"CallSid": "x"}
                ) as r:
                    assert r.status == 302
            assert (await get_json(f"{daemon.http}/ready"))[0] == 503
            async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-two", call_sid="CA-two") as second:
                await asyncio.wait_for(second.closed.wait(), 10)
                assert second.log.frames, "the refused caller should hear the busy message"
            assert not first.closed.is_set()
    finally:
        assert daemon.terminate() == 0


async def test_an_overloaded_daemon_refuses_new_calls_and_counts_them(tmp_path: Path) -> None:
    # A loop-lag limit no loop can meet stands in for a machine past its capacity.
    overrides = {"calls": {"overload_loop_lag_ms": 0.001}, "prompts": {"busy": "Busy."}}
    daemon = start_daemon(tmp_path, overrides, ready_path="/live")  # /ready says "overloaded" at once
    try:
        await asyncio.sleep(0.5)  # the lag probe has fired
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{daemon.http}/webhooks/exotel/passthru", data={"CallSid": "CA-over", "From": "+9198"}
            ) as r:
                assert (r.status, await r.text()) == (302, "overloaded")
        assert (await get_json(f"{daemon.http}/ready"))[1]["reasons"] == ["overloaded"]
        health = (await get_json(f"{daemon.http}/health"))[1]
        assert health["load"]["refusing"] == "overloaded" and health["load"]["loop_lag_ms"] >= 0
        async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-over2", call_sid="CA-over2") as caller:
            await asyncio.wait_for(caller.closed.wait(), 10)
            assert caller.log.frames, "the refused caller should hear the busy message"
        rejected = metric_value(
            await metrics_text(daemon), "voicebridge_calls_rejected_total", 'reason="overloaded"'
        )
        assert rejected == 2
    finally:
        assert daemon.terminate() == 0


async def test_the_model_per_call_mode_loads_a_model_for_each_call(
    tmp_path: Path, speak: Callable[[str, int], bytes], transcribe: Callable[[bytes, int], str]
) -> None:
    """The original design, kept for bench/'s comparison, still answers calls, each with its own model:
    bench/naive_daemon.py serves the daemon with a per-call STT factory (no config key does)."""
    # Admission by load off (0 = no limit; it has tests of its own): loading a Whisper model for each call
    # lags the event loop past 150 ms on a 2-core runner shared with other test workers, and the guard then
    # rightly refuses the call as overloaded (seen in parallel runs), which is not what this test is about.
    no_load_limits = {"overload_stt_wait_ms": 0, "overload_loop_lag_ms": 0, "overload_stt_utilisation": 0}
    overrides = {"prompts": {"greeting": "Hi."}, "calls": no_load_limits}
    daemon = start_daemon(tmp_path, overrides, entry=NAIVE_DAEMON)
    try:
        for n in range(2):
            async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-own-{n}", call_sid=f"CA-own-{n}") as caller:
                await caller.listen_until_mark(timeout=20)
                result = await caller.turn(speak("What time do you open?", 8000), timeout=30)
                assert "open" in transcribe(result.reply_pcm16, 8000).lower()
            await wait_until_gone(daemon, f"CA-own-{n}")
        health = (await get_json(f"{daemon.http}/health"))[1]
        assert health["model_loads"]["whisper"] == 3  # the shared one at start-up, then one per call
        # Idle again: the freed heap goes back to the OS within a check interval or two (5 s each).
        deadline = time.monotonic() + 15
        while health["idle_memory"]["trims"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            health = (await get_json(f"{daemon.http}/health"))[1]
        assert health["idle_memory"]["trims"] >= 1
    finally:
        assert daemon.terminate() == 0


async def test_sigterm_drains_live_call(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"server": {"drain_timeout": 3.0}, "prompts": {"goodbye": "Goodbye."}})
    async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-drain", call_sid="CA-drain") as caller:
        await caller.listen_until_mark(timeout=20)
        daemon.process.send_signal(15)
        await asyncio.sleep(0.3)
        assert (await get_json(f"{daemon.http}/ready"))[0] == 503
        frames_before = len(caller.log.frames)
        silence = asyncio.create_task(caller.keep_silent(20))
        await asyncio.wait_for(caller.closed.wait(), 20)
        silence.cancel()
        assert len(caller.log.frames) > frames_before, "the drained caller should hear goodbye"
    assert await asyncio.to_thread(daemon.process.wait, 30) == 0
    assert "outcome=shutdown" in daemon.log()


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _metric_names(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in re.findall(r"\bvoicebridge_[a-z_]+", expr)}


def _deploy_files() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The dashboard, and the alerting rules (each checked to be a complete rule)."""
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yaml").read_text())["groups"][0]["rules"]
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
    return dashboard, rules


async def test_every_metric_the_dashboard_and_alerts_name_is_exported(daemon: DaemonProcess) -> None:
    dashboard, rules = _deploy_files()
    panel_exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    named = _metric_names(panel_exprs) | _metric_names([rule["expr"] for rule in rules])
    exported = await metrics_text(daemon)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exported, re.MULTILINE))
    missing = []
    for name in sorted(named):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in types or (base != name and types.get(base) == "histogram"):
            continue
        missing.append(name)
    assert not missing, missing
    # What the panels say they show: every latency stage, and the node's STT capacity.
    assert {"voicebridge_stage_latency_seconds_bucket", "voicebridge_stt_workers"} <= named
    assert metric_value(exported, "voicebridge_stt_workers") >= 1
