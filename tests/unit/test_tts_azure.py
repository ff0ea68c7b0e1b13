"""Azure TTS through the real Speech SDK against a local fake of the service's websocket protocol."""

from __future__ import annotations

import asyncio
import socket
import time
from xml.etree import ElementTree

import numpy as np
import pytest
from pydantic import SecretStr

from voicebridge.config.schema import TtsConfig
from voicebridge.sim.azure_speech import FakeAzureSpeech, ssml_text
from voicebridge.speech.base import SpeechEngineError
from voicebridge.speech.tts.azure import AzureTTS, build_ssml

KEY = "azure-key-that-must-not-leak"


def engine_for(host: str, **extra: object) -> AzureTTS:
    return AzureTTS(TtsConfig(engine="azure", azure_key=SecretStr(KEY), azure_host=host, **extra))


async def collect(engine: AzureTTS, text: str, rate: int) -> tuple[list[bytes], float, float]:
    started = time.perf_counter()
    first = 0.0
    chunks = []
    async for pcm in engine.synthesize(text, rate):
        first = first or time.perf_counter() - started
        chunks.append(pcm)
    return chunks, first, time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("rate", "wire_format"),
    [
        (8000, "raw-8khz-16bit-mono-pcm"),
        (16000, "raw-16khz-16bit-mono-pcm"),
        (24000, "raw-24khz-16bit-mono-pcm"),
    ],
)
async def test_audio_arrives_at_the_call_rate(rate: int, wire_format: str) -> None:
    async with FakeAzureSpeech(pieces=3, piece_seconds=0.3, tone_hz=500) as fake:
        chunks, _, _ = await collect(engine_for(fake.host_url), "Your appointment is confirmed.", rate)
    pcm = b"".join(chunks)
    assert fake.formats_received == [wire_format]
    assert len(pcm) == 3 * int(rate * 0.3) * 2
    # The tone comes back at the rate we asked for: its dominant frequency is still 500 Hz.
    spectrum = np.abs(np.fft.rfft(np.frombuffer(pcm, "<i2")))
    assert abs(np.argmax(spectrum) * rate / (len(pcm) // 2) - 500) < 5
    assert fake.keys_received == [KEY]


async def test_audio_streams_before_the_utterance_is_finished() -> None:
    async with FakeAzureSpeech(pieces=5, piece_delay=0.2) as fake:
        chunks, first, total = await collect(engine_for(fake.host_url), "A longer sentence to stream.", 8000)
    assert len(chunks) == 5 and len(b"".join(chunks)) == 5 * int(8000 * 0.3) * 2
    assert first < 0.5 < 0.8 < total  # the first chunk came long before the fake sent the last


async def test_tiny_and_misaligned_pieces_come_out_as_whole_samples_of_20ms_or_more() -> None:
    async with FakeAzureSpeech(pieces=40, piece_seconds=0.005, split_odd=True, tone_hz=500) as fake:
        chunks, _, _ = await collect(engine_for(fake.host_url), "Tiny pieces.", 8000)
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    assert all(len(chunk) >= 320 for chunk in chunks[:-1])
    t = np.arange(40 * 40) / 8000
    expected = (np.sin(2 * np.pi * 500 * t) * 8000).astype("<i2").tobytes()
    assert b"".join(chunks) == expected  # nothing lost, duplicated or shifted by a byte


async def test_synthesis_never_stalls_the_event_loop() -> None:
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with FakeAzureSpeech(pieces=2) as fake:
        engine = engine_for(fake.host_url)
        ticker = asyncio.create_task(tick())
        for _ in range(3):  # the SDK closes each synthesizer's socket as it goes: not on our loop
            _, _, total = await collect(engine, "Hello there.", 8000)
            assert total < 0.5
        ticker.cancel()
    assert max(gaps) < 0.1


async def test_ssml_carries_voice_style_rate_and_escaped_text() -> None:
    text = 'Tom & Jerry said "5 < 6" isn\'t news'
    async with FakeAzureSpeech(pieces=1) as fake:
        engine = engine_for(fake.host_url, azure_voice="en-IN-NeerjaNeural", azure_style="cheerful", rate=1.2)
        await collect(engine, text, 8000)
    (ssml,) = fake.ssml_received
    assert '<voice name="en-IN-NeerjaNeural">' in ssml and 'xml:lang="en-IN"' in ssml
    assert '<mstts:express-as style="cheerful">' in ssml
    assert '<prosody rate="+20%">' in ssml
    assert "Tom &amp; Jerry" in ssml and "5 &lt; 6" in ssml
    assert ssml_text(ssml) == text.replace("&", "&amp;").replace("<", "&lt;")


def test_ssml_without_style_and_with_hostile_attributes() -> None:
    config = TtsConfig(azure_voice='en-US-X"><evil', rate=0.9)
    ssml = build_ssml("Hi", config)
    assert "express-as" not in ssml
    assert '<prosody rate="-10%">Hi</prosody>' in ssml
    voice = ElementTree.fromstring(ssml).find("{http://www.w3.org/2001/10/synthesis}voice")
    assert voice is not None and voice.get("name") == 'en-US-X"><evil'  # still well-formed, name intact


async def test_closing_early_stops_the_synthesis_without_waiting() -> None:
    async with FakeAzureSpeech(pieces=10, piece_delay=0.1) as fake:
        engine = engine_for(fake.host_url)
        stream = engine.synthesize("Stop me part way through.", 8000)
        assert await anext(stream)
        started = time.perf_counter()
        await stream.aclose()
        assert time.perf_counter() - started < 0.05  # a barge-in never waits for the socket to close
        for _ in range(50):
            if fake.stopped_early:
                break
            await asyncio.sleep(0.02)
        assert fake.stopped_early == 1 and fake.pieces_sent < 5
        # The engine is still usable afterwards.
        chunks, _, _ = await collect(engine, "Again.", 8000)
        assert b"".join(chunks)


async def test_unreachable_service_names_the_host_and_hides_the_key() -> None:
    port = free_port()
    started = time.perf_counter()
    with pytest.raises(SpeechEngineError) as caught:
        await collect(engine_for(f"ws://127.0.0.1:{port}"), "Hello.", 8000)
    assert time.perf_counter() - started < 2
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    assert KEY not in message


async def test_service_failure_is_one_line_without_the_key() -> None:
    # Even if the service echoed the key back, it would not reach the operator's log.
    async with FakeAzureSpeech(fail_with_close=True, fail_message=f"bad key {KEY}") as fake:
        with pytest.raises(SpeechEngineError) as caught:
            await collect(engine_for(fake.host_url), "Hello.", 8000)
    message = str(caught.value)
    assert message.startswith(f"Azure TTS ({fake.host_url}) failed") and "1011" in message
    assert KEY not in message and "\n" not in message


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(SpeechEngineError, match="azure_key"):
        AzureTTS(TtsConfig(engine="azure"))


async def test_unsupported_rate_is_refused() -> None:
    with pytest.raises(SpeechEngineError, match="11025"):
        await collect(engine_for("ws://127.0.0.1:9"), "Hello.", 11025)


async def test_concurrent_calls_at_different_rates_each_get_their_own_audio() -> None:
    async with FakeAzureSpeech(pieces=3, piece_delay=0.05) as fake:
        engine = engine_for(fake.host_url)
        rates = [8000, 16000, 8000, 16000, 24000, 8000]
        results = await asyncio.gather(*(collect(engine, f"Caller {i}.", r) for i, r in enumerate(rates)))
    for rate, (chunks, _, _) in zip(rates, results, strict=True):
        assert len(b"".join(chunks)) == 3 * int(rate * 0.3) * 2
    assert sorted(fake.formats_received) == sorted(f"raw-{r // 1000}khz-16bit-mono-pcm" for r in rates)
