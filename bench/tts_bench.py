"""TTS time to first audio and real-time factor, Piper (local) and Azure (the SDK against the local fake).

Not a test: prints figures. `python bench/tts_bench.py [--runs 10]`
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from voicebridge.config.schema import Settings, TtsConfig
from voicebridge.sim.azure_speech import FakeAzureSpeech
from voicebridge.speech.base import TextToSpeech
from voicebridge.speech.models import ModelCache
from voicebridge.speech.tts.azure import AzureTTS
from voicebridge.speech.tts.piper import PiperTTS

TEXTS = [
    "You said: I would like to book an appointment for tomorrow.",
    "Thank you for calling. Your appointment is confirmed for tomorrow at ten. Is there anything else?",
    "Sure.",
    "Our clinic opens at nine in the morning on weekdays and at ten on Saturdays.",
]


async def measure(engine: TextToSpeech, runs: int, rate: int = 8000) -> tuple[list[float], list[float]]:
    first_audio: list[float] = []
    rtf: list[float] = []
    for _ in range(runs):
        for text in TEXTS:
            started = time.perf_counter()
            first = 0.0
            samples = 0
            async for pcm in engine.synthesize(text, rate):
                first = first or time.perf_counter() - started
                samples += len(pcm) // 2
            total = time.perf_counter() - started
            first_audio.append(first)
            rtf.append(total / (samples / rate))
    return first_audio, rtf


def report(name: str, first_audio: list[float], rtf: list[float]) -> None:
    ordered = sorted(first_audio)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"{name:8s} first audio p50 {statistics.median(first_audio) * 1000:5.0f} ms  "
        f"p95 {p95 * 1000:5.0f} ms  "
        f"RTF {statistics.median(rtf):.3f}  (n={len(first_audio)})"
    )


async def main(runs: int) -> None:
    piper = PiperTTS(Settings().tts, ModelCache())
    await measure(piper, 1)  # warm-up: onnxruntime's first run allocates
    report("piper", *await measure(piper, runs))

    async with FakeAzureSpeech() as fake:
        azure = AzureTTS(TtsConfig(engine="azure", azure_key="bench", azure_host=fake.host_url))
        await measure(azure, 1)
        report("azure*", *await measure(azure, runs))
    print("* Azure figures are the SDK against a local fake on loopback: SDK overhead, not service latency.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
