"""Faults: a failing STT engine, Azure gone mid-call, a slow backend, a caller vanishing, a provider that
stops reading, SIGHUP. Each time the call (or the daemon) goes on, and says what happened."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.node_api import FakeNodeApi
from voicebridge.call.session import StreamSession
from voicebridge.config.schema import Settings
from voicebridge.server.app import create_app
from voicebridge.sim.azure_speech import FakeAzureSpeech
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, free_port, start_daemon
from voicebridge.speech.base import SpeechEngineError, Transcript
from voicebridge.speech.factory import Engines
from voicebridge.speech.models import ModelCache
from voicebridge.speech.scheduler import always_confirmed
from voicebridge.speech.stt import WhisperSTT
from voicebridge.speech.tts.piper import PiperTTS
from voicebridge.speech.wer import word_error_rate

pytestmark = pytest.mark.e2e

Speak = Callable[[str, int], bytes]
Transcribe = Callable[[bytes, int], str]


async def metric(http: str, pattern: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        found = re.search(pattern + r" ([0-9.e+-]+)", await response.text())
    return float(found.group(1)) if found else 0.0


class FailingFirstSTT:
    """The real Whisper engine, except that its first `failures` transcriptions raise."""

    name = "whisper"

    def __init__(self, real: WhisperSTT, failures: int) -> None:
        self._real = real
        self.failures = failures

    async def transcribe(
        self,
        pcm16: bytes,
        sample_rate: int,
        confirmed: Callable[[], bool] = always_confirmed,
        language: str = "",
    ) -> Transcript:
        if self.failures > 0:
            self.failures -= 1
            raise SpeechEngineError("injected: the STT worker died")
        return await self._real.transcribe(pcm16, sample_rate, confirmed, language)


@asynccontextmanager
async def daemon_in_process(settings: Settings, engines: Engines) -> AsyncIterator[str]:
    """The real app on a loopback port in this process, with engines handed in; yields its http URL."""
    runner = aiohttp.web.AppRunner(create_app(settings, engines), access_log=None)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_stt_raising_gives_the_apology_and_the_call_goes_on(
    tmp_path: Path, model_cache: ModelCache, speak: Speak, transcribe: Transcribe
) -> None:
    settings = Settings(
        server={"state_dir": str(tmp_path)},
        prompts={"greeting": "Hello."},
        turn={"speculative_ms": 0},  # one transcription per turn, so "the first one fails" is exact
    )
    stt = FailingFirstSTT(WhisperSTT(settings.stt, model_cache), failures=0)
    async with daemon_in_process(settings, Engines(stt=stt, tts=PiperTTS(settings.tts, model_cache))) as http:
        stt.failures = 1  # armed after start-up: the warm-up's own transcription must not take the fault
        url = http.replace("http://", "ws://") + "/ws/stream/CA-stt-fault"
        async with SimulatedCaller(url, call_sid="CA-stt-fault") as caller:
            await caller.listen_until_mark(timeout=20)
            first = await caller.turn(speak("What time do you open?", 8000), timeout=30)
            assert "sorry" in transcribe(first.reply_pcm16, 8000).lower()
            second = await caller.turn(speak("Please book a table for two.", 8000), timeout=30)
            heard = transcribe(second.reply_pcm16, 8000)
            assert word_error_rate("you said please book a table for two", heard) <= 0.25, heard
            await caller.stop()
        assert await metric(http, r'voicebridge_errors_total\{kind="stt"\}') == 1


async def test_azure_gone_mid_call_falls_back_to_piper_and_says_so(
    tmp_path: Path, speak: Speak, transcribe: Transcribe
) -> None:
    azure = FakeAzureSpeech(pieces=2, piece_seconds=0.4)
    await azure.__aenter__()
    daemon: DaemonProcess | None = None
    try:
        overrides = {
            "prompts": {"greeting": "Hello."},
            "tts": {
                "engine": "azure",
                "azure_key": "fake-key",
                "azure_host": azure.host_url,
                "fallback_engine": "piper",
            },
        }
        # start_daemon polls synchronously: run it in a thread so this loop keeps serving the fake.
        daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
        async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-azure", call_sid="CA-azure") as caller:
            await caller.listen_until_mark(timeout=20)
            first = await caller.turn(speak("Please book a table for two.", 8000), timeout=30)
            assert first.mark_at is not None and len(first.reply_pcm16) > 8000  # the fake's tone
            await azure.__aexit__(None, None, None)  # Azure is now unreachable
            second = await caller.turn(speak("What time do you open on Sunday?", 8000), timeout=30)
            heard = transcribe(second.reply_pcm16, 8000)
            assert word_error_rate("you said what time do you open on sunday", heard) <= 0.3, heard
            await caller.stop()
        assert await metric(daemon.http, r'voicebridge_tts_fallbacks_total\{reason="error"\}') >= 1
        assert "azure TTS failed, speaking with piper" in daemon.log()
    finally:
        if daemon is not None:
            daemon.terminate()
        await azure.__aexit__(None, None, None)


async def test_backend_slower_than_its_timeout_gives_the_apology(
    tmp_path: Path, speak: Speak, transcribe: Transcribe
) -> None:
    async with FakeNodeApi(api_key="k", delay=3.0) as backend:
        overrides: dict[str, dict[str, Any]] = {
            "prompts": {"greeting": "Hello."},
            "backend": {"kind": "node", "url": backend.url, "api_key": "k", "request_timeout": 1.0},
        }
        daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
        try:
            async with SimulatedCaller(f"{daemon.ws}/ws/stream/CA-slow", call_sid="CA-slow") as caller:
                await caller.listen_until_mark(timeout=20)
                result = await caller.turn(speak("What time do you open?", 8000), timeout=30)
                assert result.latency is not None and result.latency < 3.0  # not the backend's 3 s
                assert "sorry" in transcribe(result.reply_pcm16, 8000).lower()
                assert not caller.closed.is_set()  # the call goes on
                await caller.stop()
            assert "backend failed (1 in a row)" in daemon.log()
        finally:
            daemon.terminate()


async def test_caller_vanishing_mid_reply_is_finalised_as_dropped(tmp_path: Path, speak: Speak) -> None:
    daemon = await asyncio.to_thread(start_daemon, tmp_path, {"prompts": {"greeting": "Hello."}})
    try:
        caller = SimulatedCaller(f"{daemon.ws}/ws/stream/CA-gone", call_sid="CA-gone")
        await caller.connect()
        await caller.listen_until_mark(timeout=20)
        speech_end = await caller.say(speak("Tell me everything about your opening hours please.", 8000))
        for _ in range(1000):  # the reply has started arriving
            if caller.log.first_frame_after(speech_end) is not None:
                break
            await asyncio.sleep(0.02)
        assert caller.log.first_frame_after(speech_end) is not None
        # No close frame, no FIN handshake: the TCP connection just dies (the daemon sees 1006).
        assert caller._ws is not None
        connection = caller._ws._response.connection
        assert connection is not None and connection.transport is not None
        connection.transport.abort()
        await caller.hangup()
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                async with session.get(f"{daemon.http}/api/calls/active") as response:
                    if not (await response.json())["calls"]:
                        break
                await asyncio.sleep(0.1)
            async with session.get(f"{daemon.http}/live") as response:
                assert response.status == 200
        assert 'voicebridge_calls_total{outcome="dropped",provider="exotel"} 1.0' in await _metrics_text(
            daemon.http
        )
        assert "stream dropped" in daemon.log() and "Traceback" not in daemon.log()
    finally:
        daemon.terminate()


async def _metrics_text(http: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        return await response.text()


class _StuckSocket:
    """A WebSocket whose peer never reads: every send waits forever."""

    closed = False

    async def send_str(self, text: str) -> None:
        await asyncio.Event().wait()


async def test_a_provider_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    aborted: list[bool] = []

    class Services:  # only what _send touches
        class metrics:
            class errors:
                @staticmethod
                def labels(**_labels: str) -> Any:
                    return type("C", (), {"inc": staticmethod(lambda: aborted.append(False))})

        settings = Settings()

    session = StreamSession(
        Services(),  # type: ignore[arg-type]
        _StuckSocket(),  # type: ignore[arg-type]
        "CA-stuck",
        8000,
        abort=lambda: aborted.append(True),
        send_timeout_s=0.2,
    )
    started = time.monotonic()
    await session._send('{"event": "media"}')
    assert time.monotonic() - started < 2.0
    assert aborted == [False, True]  # counted, then the connection cut


async def test_sighup_is_logged_as_not_supported_and_the_daemon_keeps_running(tmp_path: Path) -> None:
    daemon = await asyncio.to_thread(start_daemon, tmp_path)
    try:
        daemon.process.send_signal(signal.SIGHUP)
        for _ in range(50):
            if "SIGHUP: config reload is not supported" in daemon.log():
                break
            await asyncio.sleep(0.1)
        assert "SIGHUP: config reload is not supported" in daemon.log()
        async with aiohttp.ClientSession() as session, session.get(f"{daemon.http}/live") as response:
            assert response.status == 200
        assert daemon.process.poll() is None
    finally:
        assert daemon.terminate() == 0
