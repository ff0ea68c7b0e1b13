"""Issue 19, item 3, over the wire: a real daemon transcribes on the real wyoming-faster-whisper server
(loopback, the shipped tiny.en) and, when that server is killed mid-call, goes on with local Whisper
without losing the call or a turn; and an OpenAI-compatible server's answer (or its 401) reaches the call."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.transcription_server import FakeTranscriptions
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.sim.wyoming_server import start_wyoming_server
from voicebridge.speech.wer import word_error_rate

pytestmark = pytest.mark.e2e

Speak = Callable[[str, int], bytes]
Transcribe = Callable[[bytes, int], str]
FIRST = "What time does the clinic open on Saturday?"
SECOND = "I would like to book an appointment for tomorrow."
THIRD = "Can you send me the receipt by email?"


async def metric(http: str, name: str, labels: str = "") -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        text = await response.text()
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


async def test_calls_transcribe_on_the_wyoming_server_and_go_on_locally_when_it_dies(
    tmp_path: Path, speak: Speak, transcribe: Transcribe
) -> None:
    server = await asyncio.to_thread(start_wyoming_server, tmp_path / "wyoming")
    daemon: DaemonProcess | None = None
    try:
        # A generous deadline: the server decodes in Whisper's 30 s window on cores the test suite shares.
        stt = {"engine": "wyoming", "url": server.url, "remote_cool_down_s": 30.0, "remote_timeout_s": 10.0}
        overrides = {"stt": stt}
        daemon = await asyncio.to_thread(start_daemon, tmp_path / "daemon", overrides)
        async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-wyoming", call_sid="CA-wyoming") as caller:
            await caller.listen_until_mark(timeout=20)
            replies = []
            for number, sentence in enumerate((FIRST, SECOND, THIRD)):
                if number == 1:
                    # The server dies as a crashed one would; the call goes on.
                    await asyncio.to_thread(server.stop)
                turn = await caller.turn(speak(sentence, 8000), timeout=30)
                assert turn.mark_at is not None, daemon.log()
                replies.append(transcribe(turn.reply_pcm16, 8000))
            await caller.stop()
        for sentence, heard in zip((FIRST, SECOND, THIRD), replies, strict=True):
            assert word_error_rate("you said " + sentence, heard) <= 0.25, (heard, daemon.log())
        # The first turn was the server's (it logs each transcript), the others the local model's.
        assert "clinic" in server.log().lower(), server.log()
        fallbacks = "voicebridge_stt_fallbacks_total"
        assert await metric(daemon.http, fallbacks, 'reason="error"') == 1
        assert await metric(daemon.http, fallbacks, 'reason="cooling_down"') >= 1  # each later transcription
        assert await metric(daemon.http, "voicebridge_errors_total", 'kind="stt"') == 0
        # The outage is logged once, on one line, naming the server and what happened.
        warnings = [line for line in daemon.log().splitlines() if "transcribing locally" in line]
        assert len(warnings) == 1 and f"wyoming STT at 127.0.0.1:{server.port}" in warnings[0], warnings
        completed = await metric(
            daemon.http, "voicebridge_calls_total", 'outcome="completed",provider="exotel"'
        )
        assert completed == 1, daemon.log()
    finally:
        server.stop()
        if daemon is not None:
            daemon.terminate()


async def test_an_openai_compatible_server_transcribes_and_its_401_falls_back(
    tmp_path: Path, speak: Speak, transcribe: Transcribe
) -> None:
    async with FakeTranscriptions(text="What are your opening hours today?") as server:
        overrides = {
            "stt": {
                "engine": "openai",
                "url": server.url,
                "api_key": "sk-stt-fake",
                "remote_cool_down_s": 0.1,
            }
        }
        daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
        try:
            async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-oai", call_sid="CA-oai") as caller:
                await caller.listen_until_mark(timeout=20)
                first = await caller.turn(speak(FIRST, 8000), timeout=30)
                server.api_key = "sk-rotated"  # the key the daemon has is no longer accepted
                await asyncio.sleep(0.2)  # past the cool-down: the next turn asks the server again
                second = await caller.turn(speak(SECOND, 8000), timeout=30)
                await caller.stop()
            assert first.mark_at is not None and second.mark_at is not None, daemon.log()
            # The first reply echoes the server's transcript, not what was said; the second the local one.
            heard_first = transcribe(first.reply_pcm16, 8000)
            assert word_error_rate("you said what are your opening hours today", heard_first) <= 0.25
            heard_second = transcribe(second.reply_pcm16, 8000)
            assert word_error_rate("you said " + SECOND, heard_second) <= 0.25, heard_second
            assert server.heard and server.heard[0].fields["model"] == "whisper-1"
            assert await metric(daemon.http, "voicebridge_stt_fallbacks_total", 'reason="error"') >= 1
            assert "openai STT answered HTTP 401" in daemon.log()
            assert "sk-stt-fake" not in daemon.log()
        finally:
            daemon.terminate()
