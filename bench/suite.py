"""The benchmark suite: one command, every performance figure, a markdown table and a plot.

    python bench/suite.py                # the full run, ~25 min on 2 cores → bench/results/
    python bench/suite.py --quick        # a 3-minute smoke run of every phase (CI runs this)

Phases, each against real parts (daemon processes on loopback, real-time paced Exotel callers from
bench/loadgen.py, real faster-whisper and Piper with the shipped models):

1. one call, local Piper TTS, echo backend: voice-to-voice p50/p95 over ≥ 12 turns;
2. STT alone at 1, 2, 4, 8 and 16 concurrent streams, the shared engine against one model per stream;
3. calls: the production shape, TTS remote (the Azure engine against the local fake, answering with
   pre-rendered speech), at rising concurrency until two levels in a row are not held, with admission
   control on and the static cap out of the way; RSS idle and under load at each level;
4. the same load on the original design, one Whisper model per call (bench/naive_daemon.py).

Writes results.json, results.md and latency_vs_calls.png to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import wave
from contextlib import contextmanager, suppress
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# bench/'s own modules import as siblings: `python bench/suite.py` puts this folder on sys.path.
import report
from loadgen import LevelResult, run_level
from naive_daemon import NAIVE_ENTRY
from stt_bench import synthesise
from stt_load import stt_concurrency

from voicebridge.audio.levels import trim_trailing_quiet
from voicebridge.config.schema import Settings
from voicebridge.sim.daemon import DaemonProcess, free_port, start_daemon
from voicebridge.speech.models import ModelCache
from voicebridge.speech.stt import usable_cores
from voicebridge.speech.tts.piper import PiperTTS

ROOT = Path(__file__).resolve().parent.parent
P95_LIMIT_MS = 1500.0
TURN_SENTENCES = [
    "I would like to book an appointment for tomorrow.",
    "What time does the clinic open on Saturday?",
    "Can I speak to someone about my bill?",
    "My order has not arrived yet.",
    "Please cancel my booking for next week.",
    "Is the doctor available this evening?",
    "How much does the annual plan cost?",
    "I forgot my account password.",
    "Can you send me the receipt by email?",
    "Do you deliver to Bangalore or only Mumbai?",
]
REPLY_TEXT = "Sure, I can help you with that."


async def render_audio() -> tuple[list[bytes], bytes]:
    """Caller turns of 2-4 s at 8 kHz (fade-out trimmed), and the fake Azure's reply at 24 kHz."""
    engine = PiperTTS(Settings().tts, ModelCache())
    turns = []
    for text in TURN_SENTENCES:
        pcm = trim_trailing_quiet(b"".join([p async for p in engine.synthesize(text, 8000)]))
        if 2.0 <= len(pcm) / 16000 <= 4.0:
            turns.append(pcm)
    reply = b"".join([p async for p in engine.synthesize(REPLY_TEXT, 24000)])
    engine.close()
    return turns, reply


@contextmanager
def azure_fake(workdir: Path, reply_pcm24: bytes, first_audio_ms: float):  # type: ignore[no-untyped-def]
    """The fake Azure Speech service in its own process, answering every request with `reply_pcm24`."""
    wav_path = workdir / "azure-reply.wav"
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(reply_pcm24)
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "voicebridge.sim.azure_speech", "--port", str(port)),
            *("--reply-wav", str(wav_path), "--first-audio-ms", str(first_audio_ms)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Azure fake did not start")
            time.sleep(0.2)
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def azure_overrides(host: str, per_call_model: bool) -> dict[str, dict[str, Any]]:
    """A daemon as in production (remote TTS), with room beyond the default cap of 30 calls."""
    overrides: dict[str, dict[str, Any]] = {
        "server": {"max_concurrent_calls": 500},
        "tts": {"engine": "azure", "azure_host": host, "azure_key": "bench"},
    }
    if per_call_model:
        # The original design had no admission control either: it takes whatever comes.
        overrides["calls"] = dict.fromkeys(
            ("overload_stt_wait_ms", "overload_loop_lag_ms", "overload_stt_utilisation"), 0
        )
    return overrides


async def levels_on(
    daemon: DaemonProcess, design: str, turns: list[bytes], counts: list[int], seconds: float, warmup_s: float
) -> list[dict[str, Any]]:
    """Rising levels on one daemon until two in a row are not held."""
    await run_level(daemon.http, "warm-up", 2, turns, warmup_s, ramp_s=1.0)
    rows: list[dict[str, Any]] = []
    misses = 0
    for calls in counts:
        result: LevelResult = await run_level(daemon.http, design, calls, turns, seconds)
        row = {**asdict(result), "held": result.held(P95_LIMIT_MS)}
        rows.append(row)
        print(
            f"  {design:8s} {calls:3d} calls: p50 {row['p50_ms']} p95 {row['p95_ms']} ms, late "
            f"{row['late_frames']:.0f}, refused {row['refused']}, failed {row['failed']}, RSS "
            f"{row['rss_idle_mb']}→{row['rss_loaded_mb']} MB, held {row['held']}",
            flush=True,
        )
        misses = 0 if row["held"] else misses + 1
        if misses >= 2:
            break
    return rows


def per_call_slope(rows: list[dict[str, Any]]) -> float | None:
    """MB of RSS per additional call: least squares over levels where every call was live."""
    points = [(r["calls"], r["rss_loaded_mb"]) for r in rows if r["rss_loaded_mb"] and not r["refused"]]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return round(sum((x - mean_x) * (y - mean_y) for x, y in points) / spread, 2) if spread else None


def _grown(row: dict[str, Any] | None) -> float | None:
    """RSS the calls of one level added over the idle daemon."""
    return row["rss_loaded_mb"] - row["rss_idle_mb"] if row and row["rss_loaded_mb"] else None


def summarise(one: dict[str, Any], levels: list[dict[str, Any]]) -> dict[str, Any]:
    shared = [r for r in levels if r["design"] == "shared"]
    naive = [r for r in levels if r["design"] == "per-call"]
    at = {d: next((r for r in rows if r["calls"] == 10), None) for d, rows in (("s", shared), ("n", naive))}

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 1) if a and b and b > 0 else None

    s10, n10 = at["s"], at["n"]
    return {
        "one_call_p50_ms": one["p50_ms"],
        "one_call_p95_ms": one["p95_ms"],
        "capacity_calls": max((r["calls"] for r in shared if r["held"]), default=None),
        "rss_idle_mb": shared[0]["rss_idle_mb"] if shared else None,
        "rss_per_call_mb": per_call_slope(shared),
        "naive_rss_per_call_mb": per_call_slope(naive),
        # What the calls cost over the freshly started daemon (models loaded, no call yet): the levels'
        # own idle readings carry what earlier levels left behind, and the naive design keeps a lot.
        "call_memory_ratio_at_10": ratio(
            n10 and n10["rss_loaded_mb"] - naive[0]["rss_idle_mb"],
            s10 and s10["rss_loaded_mb"] - shared[0]["rss_idle_mb"],
        ),
        "process_rss_ratio_at_10": ratio(n10 and n10["rss_loaded_mb"], s10 and s10["rss_loaded_mb"]),
        "p95_ratio_at_10": ratio(n10 and n10["p95_ms"], s10 and s10["p95_ms"]),
    }


def machine() -> str:
    model = ""
    with suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return f"{usable_cores()} cores ({model or platform.machine()}), Python {platform.python_version()}"


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    quick = args.quick
    print("rendering caller turns and the Azure fake's reply with Piper …", flush=True)
    turns, reply = await render_audio()
    results: dict[str, Any] = {
        "command": " ".join(["python", "bench/suite.py", *sys.argv[1:]]),
        "machine": machine(),
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"azure_first_audio_ms": args.azure_first_audio_ms, "seconds_per_level": args.seconds},
    }

    print("1. one call: Piper, echo backend", flush=True)
    daemon = start_daemon(workdir / "one-call")
    try:
        await run_level(daemon.http, "warm-up", 1, turns, 8.0 if quick else 15.0, ramp_s=0.5)
        one = await run_level(daemon.http, "one-call", 1, turns, 20.0 if quick else 90.0, ramp_s=0.5)
    finally:
        daemon.terminate()
    results["one_call"] = asdict(one)
    print(f"  p50 {one.p50_ms} p95 {one.p95_ms} ms over {one.turns} turns", flush=True)

    print("2. STT under concurrency", flush=True)
    audio = await synthesise(ModelCache())
    results["stt"] = await stt_concurrency(
        audio, [1, 2] if quick else [1, 2, 4, 8, 16], [2] if quick else [1, 2, 4, 8, 16]
    )
    del audio

    levels: list[dict[str, Any]] = []
    with azure_fake(workdir, reply, args.azure_first_audio_ms) as host:
        for design, counts, per_call_model in (
            ("shared", args.levels, False),
            ("per-call", args.naive_levels, True),
        ):
            print(f"{3 if design == 'shared' else 4}. calls, {design} model, Azure TTS fake", flush=True)
            # The per-call design is bench/naive_daemon.py: the daemon handed a per-call STT factory.
            entry = NAIVE_ENTRY if per_call_model else ("-m", "voicebridge", "serve")
            daemon = start_daemon(workdir / design, azure_overrides(host, per_call_model), entry=entry)
            try:
                levels += await levels_on(daemon, design, turns, counts, args.seconds, 6.0 if quick else 20.0)
            finally:
                daemon.terminate()
    results["levels"] = levels
    results["summary"] = summarise(results["one_call"], levels)
    results["minutes"] = (time.monotonic() - started) / 60
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--quick", action="store_true", help="a short smoke run of every phase")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--naive-levels", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per load level")
    parser.add_argument(
        "--azure-first-audio-ms", type=float, default=150.0, help="the fake service's time to first audio"
    )
    args = parser.parse_args()
    args.levels = args.levels or ([1, 3] if args.quick else [1, 5, 10, 20, 30, 40, 50, 60, 80, 100])
    args.naive_levels = args.naive_levels or ([1, 2] if args.quick else [1, 2, 5, 10, 20, 30])
    args.seconds = args.seconds or (15.0 if args.quick else 60.0)
    # Measure the daemon as the systemd unit and the image run it.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    with tempfile.TemporaryDirectory(prefix="voicebridge-bench-") as workdir:
        results = asyncio.run(run(args, Path(workdir)))
    for path in report.write(results, args.out):
        print(f"wrote {path}")
    print(report.markdown(results).split("## Calls")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
