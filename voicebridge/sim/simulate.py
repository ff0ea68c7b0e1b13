"""What `voicebridge simulate` does besides printing: turn WAV files into caller turns, run the scripted
calls against a daemon while reading its late-frame count, hear the bot's replies through local Whisper,
sum up the latencies and save the call's audio."""

from __future__ import annotations

import asyncio
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from voicebridge.config.schema import Settings
from voicebridge.sim.scripted import CallReport, CallScript, SimulationError, percentile, run_calls


def load_turns(files: list[Path], rate: int) -> list[tuple[str, bytes]]:
    """Each WAV file as one caller turn (named by the file) of PCM16 at `rate`."""
    from voicebridge.audio.levels import trim_trailing_quiet
    from voicebridge.audio.resample import resample_once
    from voicebridge.audio.wav import read_wav

    turns = []
    for path in files:
        pcm16, file_rate = read_wav(path)
        pcm16 = resample_once(pcm16, file_rate, rate) if file_rate != rate else pcm16
        # Voice-to-voice is timed from the last audible sample, not from a recording's quiet tail.
        speech = trim_trailing_quiet(pcm16, rate)
        if not speech:
            raise SimulationError(f"{path} holds no audible speech")
        turns.append((path.name, speech))
    return turns


@dataclass(slots=True)
class Simulation:
    """The calls' reports, how long they took, and the daemon's late frames meanwhile (None: unknown)."""

    reports: list[CallReport]
    wall_s: float
    late_frames: float | None

    def summary(self) -> dict[str, Any]:
        """The figures both outputs (table and JSON) end with."""
        return {
            "calls": len(self.reports),
            "failed": sum(not r.ok for r in self.reports),
            "seconds": round(self.wall_s, 1),
            "latency": latency_summary(self.reports),
            "late_frames": self.late_frames,
        }


async def simulate_calls(http: str, script: CallScript, calls: int, ramp_s: float) -> Simulation:
    """Check the daemon answers (SimulationError if not), then place the calls and count late frames."""
    await check_daemon(http)
    late_before = await late_frames(http)
    reports, wall = await run_calls(http, script, calls, ramp_s)
    late_after = await late_frames(http)
    late = None if late_before is None or late_after is None else late_after - late_before
    return Simulation(reports, wall, late)


def transcribe_replies(reports: list[CallReport], settings: Settings) -> None:
    """Fill in what the bot said, heard through the same local Whisper the daemon uses."""
    from voicebridge.speech.base import Closable
    from voicebridge.speech.factory import build_local_stt
    from voicebridge.speech.models import ModelCache

    engine = build_local_stt(settings, ModelCache())

    async def run() -> None:
        for report in reports:
            rate = report.script.sample_rate
            if report.greeting_pcm16:
                report.greeting_text = (await engine.transcribe(report.greeting_pcm16, rate)).text
            for turn in report.turns:
                if turn.reply_pcm16:
                    turn.reply_text = (await engine.transcribe(turn.reply_pcm16, rate)).text

    try:
        asyncio.run(run())
    finally:
        if isinstance(engine, Closable):
            engine.close()


def save_audio(report: CallReport, reply_path: Path | None, call_path: Path | None) -> None:
    """Write the bot's audio (mono) and/or both sides (stereo: left caller, right bot); OSError on failure."""
    from voicebridge.audio.wav import interleave_stereo, write_wav

    rate = report.script.sample_rate
    if reply_path:
        write_wav(reply_path, b"".join(frame.pcm16 for frame in report.log.frames), rate)
    if call_path:
        caller, bot = call_audio(report)
        write_wav(call_path, interleave_stereo(caller, bot), rate, channels=2)


async def check_daemon(http: str) -> None:
    """Raise SimulationError unless the daemon answers its liveness probe."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{http}/live", timeout=aiohttp.ClientTimeout(total=5)) as response,
        ):
            if response.status != 200:
                raise SimulationError(
                    f"{http}/live answered {response.status}; is that a voicebridge daemon?"
                )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SimulationError(
            f"cannot reach the daemon at {http} ({exc or type(exc).__name__}); "
            "start it with `voicebridge serve`"
        ) from None


async def late_frames(http: str) -> float | None:
    """The daemon's count of outbound frames that missed their slot (from /metrics), if reachable."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{http}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    found = re.search(r"^voicebridge_late_frames_total ([0-9.e+-]+)", text, re.M)
    return float(found.group(1)) if found else None


def latency_summary(reports: list[CallReport]) -> dict[str, float | int | None]:
    """Voice-to-voice p50/p95/max (ms) over every answered turn of every call."""
    latencies = [t.latency_s for r in reports for t in r.turns if t.latency_s is not None]
    if not latencies:
        return {"turns": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    return {
        "turns": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000),
        "p95_ms": round(percentile(latencies, 0.95) * 1000),
        "max_ms": round(max(latencies) * 1000),
    }


def call_audio(report: CallReport) -> tuple[bytes, bytes]:
    """Both sides of a call on one timeline (caller, bot) as heard on the line: clears cut the bot short."""
    rate = report.script.sample_rate
    log = report.log
    chunk_ends = [at for at, _ in log.sent]
    ends = [frame.plays_at + len(frame.pcm16) / 2 / rate for frame in log.frames] + chunk_ends + [0.0]
    total = int((max(ends) - report.started_at) * rate) + 1
    caller = np.zeros(total, dtype=np.int16)
    bot = np.zeros(total, dtype=np.int16)
    for sent_at, chunk in log.sent:
        samples = np.frombuffer(chunk, "<i2")
        start = max(0, int((sent_at - report.started_at) * rate) - len(samples))
        caller[start : start + len(samples)] = samples[: total - start]
    for frame in log.frames:
        samples = np.frombuffer(frame.pcm16, "<i2")
        end = frame.plays_at + len(samples) / rate
        cut = min((at for at in log.clears if frame.at <= at < end), default=end)
        keep = max(0, int((cut - frame.plays_at) * rate))
        start = int((frame.plays_at - report.started_at) * rate)
        piece = samples[: min(keep, total - start)]
        bot[start : start + len(piece)] = piece
    return caller.tobytes(), bot.tobytes()
