"""Voice-to-voice latency of one call against a real daemon, with a real-time Exotel (or Twilio) caller.

Voice-to-voice = the caller's last speech sample on the wire → the first reply media frame received.
Also reports the greeting's time to first frame (from sending `start`) and the daemon's own per-stage
latency histograms (from /metrics). Not a test: it prints figures.

    python bench/call_latency.py [--turns 12] [--provider exotel|twilio] [--url ws://host:port]
                                 [--stt local|wyoming]

--stt wyoming starts the real wyoming-faster-whisper (same tiny.en, one thread) on loopback and points
the daemon at it: remote STT's own cost (a connection and the events per utterance) on the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from voicebridge.audio.levels import trim_trailing_quiet
from voicebridge.config.schema import Settings
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import start_daemon
from voicebridge.sim.wyoming_server import start_wyoming_server
from voicebridge.speech.models import ModelCache
from voicebridge.speech.tts.piper import PiperTTS

SENTENCES = [
    "I would like to book an appointment for tomorrow.",
    "What time does the clinic open on Saturday?",
    "Can I speak to someone about my bill?",
    "My order has not arrived yet.",
    "Please cancel my booking for next week.",
    "Do you deliver to Bangalore?",
    "I need to change my phone number.",
    "Is the doctor available this evening?",
    "How much does the annual plan cost?",
    "Thank you, that is all for today.",
    "Can you send me the receipt by email?",
    "I forgot my account password.",
]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def render(sentences: list[str]) -> list[bytes]:
    engine = PiperTTS(Settings().tts, ModelCache())
    rendered = [b"".join([p async for p in engine.synthesize(text, 8000)]) for text in sentences]
    return [trim_trailing_quiet(pcm) for pcm in rendered]


async def stage_means(http: str) -> dict[str, tuple[float, int]]:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        text = await response.text()
    sums = dict(re.findall(r'voicebridge_stage_latency_seconds_sum\{stage="([a-z_]+)"\} ([0-9.e+-]+)', text))
    counts = dict(
        re.findall(r'voicebridge_stage_latency_seconds_count\{stage="([a-z_]+)"\} ([0-9.e+-]+)', text)
    )
    return {
        stage: (float(sums[stage]) / float(counts[stage]), int(float(counts[stage])))
        for stage in sums
        if float(counts.get(stage, 0)) > 0
    }


async def run(ws_base: str, http: str, turns: int, provider: str, chunk_ms: int) -> None:
    speech = await render([SENTENCES[i % len(SENTENCES)] for i in range(turns)])
    caller = SimulatedCaller(
        f"{ws_base}/ws/stream/CA-bench",
        provider=provider,  # type: ignore[arg-type]
        call_sid="CA-bench",
        chunk_ms=chunk_ms,
    )
    print(f"{provider} caller, {chunk_ms} ms media chunks paced in real time")
    sent_start = time.monotonic()
    await caller.connect()
    await caller.listen_until_mark(timeout=30)
    greeting_first = caller.log.first_frame_after(sent_start)
    latencies: list[float] = []
    for index, pcm in enumerate(speech):
        result = await caller.turn(pcm, timeout=30, silence_s=1.2)
        if result.latency is None:
            print(f"turn {index + 1}: no reply")
            continue
        latencies.append(result.latency)
        print(
            f"turn {index + 1:2d}: voice-to-voice {result.latency * 1000:6.0f} ms  "
            f"({len(pcm) / 16000:.1f} s speech)"
        )
    await caller.stop()
    print()
    if greeting_first is not None:
        print(f"greeting first frame after start: {(greeting_first - sent_start) * 1000:.0f} ms")
    if latencies:
        print(
            f"voice-to-voice over {len(latencies)} turns: p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        metrics = await response.text()
    late = re.search(r"^voicebridge_late_frames_total ([0-9.e+-]+)", metrics, re.M)
    print(f"late outbound frames: {float(late.group(1)) if late else 0:.0f}")
    fallbacks = re.findall(r"^voicebridge_stt_fallbacks_total\{[^}]*\} (\S+)", metrics, re.M)
    local = sum(float(count) for count in fallbacks)
    print(f"turns a remote STT left to the local model: {local:.0f}")
    print("daemon stage means (from /metrics):")
    for stage, (mean, count) in sorted((await stage_means(http)).items()):
        print(f"  {stage:18s} {mean * 1000:7.0f} ms  (n={count})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--provider", choices=["exotel", "twilio"], default="exotel")
    parser.add_argument("--chunk-ms", type=int, default=100, help="inbound media chunk size (Exotel: 20-100)")
    parser.add_argument("--url", help="existing daemon, e.g. ws://127.0.0.1:8080 (default: start one)")
    parser.add_argument("--stt", choices=["local", "wyoming"], default="local", help="the daemon's STT")
    args = parser.parse_args()
    if args.url:
        http = args.url.replace("ws://", "http://").replace("wss://", "https://")
        asyncio.run(run(args.url, http, args.turns, args.provider, args.chunk_ms))
        return
    with tempfile.TemporaryDirectory() as workdir:
        server = start_wyoming_server(Path(workdir) / "wyoming") if args.stt == "wyoming" else None
        overrides = {"stt": {"engine": "wyoming", "url": server.url}} if server is not None else {}
        try:
            daemon = start_daemon(Path(workdir), overrides)
            try:
                asyncio.run(run(daemon.ws, daemon.http, args.turns, args.provider, args.chunk_ms))
            finally:
                daemon.terminate()
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
