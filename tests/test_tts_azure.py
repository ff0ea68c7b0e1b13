"""Azure TTS through the real Speech SDK against a local fake of the service's websocket protocol."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from pydantic import SecretStr

from tests.fakes.azure_speech import FakeAzureSpeech, ssml_text
from voicebridge.config import TtsConfig
from voicebridge.speech.base import SpeechEngineError
from voicebridge.speech.tts.azure import AzureTTS

KEY = "azure-key-that-must-not-leak"


def engine_for(host: str, **extra: object) -> AzureTTS:
    return AzureTTS(TtsConfig(engine="azure", azure_key=SecretStr(KEY), azure_host=host, **extra))


async def collect(engine: AzureTTS, text: str, rate: int) -> tuple[bytes, float, float]:
    started = time.perf_counter()
    first = 0.0
    pieces = []
    async for pcm in engine.synthesize(text, rate):
        first = first or time.perf_counter() - started
        pieces.append(pcm)
    return b"".join(pieces), first, time.perf_counter() - started


@pytest.mark.parametrize(
    ("rate", "wire_format"), [(8000, "raw-8khz-16bit-mono-pcm"), (16000, "raw-16khz-16bit-mono-pcm")]
)
async def test_audio_arrives_at_the_call_rate(rate: int, wire_format: str) -> None:
    async with FakeAzureSpeech(pieces=3, piece_seconds=0.3, tone_hz=500) as fake:
        pcm, _, _ = await collect(engine_for(fake.host_url), "Your appointment is confirmed.", rate)
    assert fake.formats_received == [wire_format]
    assert len(pcm) == 3 * int(rate * 0.3) * 2
    # The tone comes back at the rate we asked for: its dominant frequency is still 500 Hz.
    spectrum = np.abs(np.fft.rfft(np.frombuffer(pcm, "<i2")))
    assert abs(np.argmax(spectrum) * rate / (len(pcm) // 2) - 500) < 5
    assert fake.keys_received == [KEY]


async def test_audio_streams_before_the_utterance_is_finished() -> None:
    async with FakeAzureSpeech(pieces=5, piece_delay=0.2) as fake:
        pcm, first, total = await collect(engine_for(fake.host_url), "A longer sentence to stream.", 8000)
    assert len(pcm) == 5 * int(8000 * 0.3) * 2
    assert first < 0.5 < 0.8 < total  # the first chunk came long before the fake sent the last


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


async def test_closing_early_stops_the_synthesis() -> None:
    async with FakeAzureSpeech(pieces=20, piece_delay=0.1) as fake:
        engine = engine_for(fake.host_url)
        stream = engine.synthesize("Stop me part way through.", 8000)
        first = await anext(stream)
        started = time.perf_counter()
        await stream.aclose()
        assert first and time.perf_counter() - started < 3.0
        # The engine is still usable afterwards.
        pcm, _, _ = await collect(engine, "Again.", 8000)
        assert pcm


async def test_unreachable_service_names_the_host_and_hides_the_key() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SpeechEngineError) as caught:
        await collect(engine_for(f"ws://127.0.0.1:{port}"), "Hello.", 8000)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    assert KEY not in message


async def test_service_failure_is_a_clear_error() -> None:
    async with FakeAzureSpeech(fail_with_close=True) as fake:
        with pytest.raises(SpeechEngineError, match="Azure TTS"):
            await collect(engine_for(fake.host_url), "Hello.", 8000)


def test_missing_key_and_bad_rate_are_clear_errors() -> None:
    with pytest.raises(SpeechEngineError, match="azure_key"):
        AzureTTS(TtsConfig(engine="azure"))


async def test_unsupported_rate_is_refused() -> None:
    with pytest.raises(SpeechEngineError, match="11025"):
        await collect(engine_for("ws://127.0.0.1:9"), "Hello.", 11025)
