"""Paced callers against a running daemon: N concurrent calls, each speaking a 2-4 s turn every ~6 s.

A caller places its call as the provider would (incoming webhook → media stream, Exotel framing,
100 ms chunks in real time, silence on the line between turns), listens to the greeting, then speaks
a turn at start-to-start intervals of `cadence_s` ± 15% and waits for the reply's mark before the next.
Voice-to-voice is timed from the send of the chunk holding the last speech sample to the first reply
frame. A call the daemon refuses (busy message, then close) is counted as refused, not as a failure.

The daemon is read while the level runs: /health every `sample_s` (RSS, active calls, load) and
/metrics before and after (late outbound frames, refusals, STT stage times).
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.scripted import CallScript, SimulationError, percentile, stream_url

REPLY_TIMEOUT_S = 20.0


@dataclass(slots=True)
class CallerResult:
    """What one paced caller saw."""

    latencies_s: list[float] = field(default_factory=list)
    refused: bool = False
    error: str = ""
    missed_replies: int = 0
    stream_host: str = ""  # host:port of the stream URL the webhook handed out (which node, in a cluster)


@dataclass(slots=True)
class LevelResult:
    """One load level: N callers for a while, and what the daemon showed meanwhile."""

    design: str
    calls: int
    seconds: float
    turns: int
    refused: int
    failed: int
    missed_replies: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    late_frames: float
    rss_idle_mb: float
    rss_loaded_mb: float
    stt_ms: float | None
    errors: list[str]

    def held(self, p95_limit_ms: float) -> bool:
        """Every call admitted and answered, p95 within the limit, not one late frame."""
        return (
            self.turns > 0
            and self.refused == 0
            and self.failed == 0
            and self.missed_replies == 0
            and self.late_frames == 0
            and self.p95_ms is not None
            and self.p95_ms <= p95_limit_ms
        )

    def row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


async def paced_caller(
    http: str, turns: list[bytes], until: float, cadence_s: float, rng: random.Random
) -> CallerResult:
    """One call: greeting, then a turn every ~cadence_s until `until` (monotonic)."""
    result = CallerResult()
    call_sid = f"CA-load-{uuid.uuid4().hex[:12]}"
    script = CallScript(turns=[], from_number=f"+9198{rng.randrange(10**8):08d}")
    try:
        async with aiohttp.ClientSession() as session:
            url = await stream_url(session, http, script, call_sid)
    except SimulationError as exc:
        result.error = str(exc)
        return result
    result.stream_host = urlsplit(url).netloc
    caller = SimulatedCaller(url, call_sid=call_sid, from_number=script.from_number, chunk_ms=100)
    try:
        await caller.connect()
        await caller.listen_until_mark(timeout=REPLY_TIMEOUT_S)
        # A refused caller hears "busy" and is closed a moment after its mark.
        with suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await caller.closed.wait()
        if caller.closed.is_set():
            result.refused = True
            return result
        # Callers do not all speak at once: each starts its rhythm at a random point of the cadence.
        next_turn = time.monotonic() + rng.uniform(0.2, cadence_s)
        while not caller.closed.is_set():
            if (wait := next_turn - time.monotonic()) > 0:
                await caller.keep_silent(wait)
            if time.monotonic() >= until or caller.closed.is_set():
                break
            spoken_at = time.monotonic()
            speech_end = await caller.say(rng.choice(turns), trailing_silence_s=REPLY_TIMEOUT_S + 5)
            mark_at = await caller.wait_for_mark(speech_end, REPLY_TIMEOUT_S)
            first = caller.log.first_frame_after(speech_end)
            await caller.end_trailing_silence()
            if first is None or mark_at is None:
                result.missed_replies += 1
            else:
                result.latencies_s.append(first - speech_end)
            next_turn = spoken_at + cadence_s * rng.uniform(0.85, 1.15)
        if caller.closed.is_set() and time.monotonic() < until:
            result.error = f"the daemon closed the call (code {caller.close_code})"
    except (aiohttp.ClientError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        with suppress(Exception):
            if not caller.closed.is_set():
                await caller.stop()
        with suppress(Exception):
            await caller.hangup()
    return result


async def health(http: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/health") as response:
        return dict(await response.json())


async def metrics(http: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        return await response.text()


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """The sum of every sample of `name` whose labels contain `labels`."""
    total = 0.0
    for found_labels, value in re.findall(
        rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.e+-]+)$", text, re.M
    ):
        if labels in found_labels:
            total += float(value)
    return total


def stage_mean_ms(before: str, after: str, stage: str) -> float | None:
    """Mean of one stage_latency histogram between two /metrics readings."""
    name = "voicebridge_stage_latency_seconds"
    label = f'stage="{stage}"'
    count = metric_sum(after, f"{name}_count", label) - metric_sum(before, f"{name}_count", label)
    total = metric_sum(after, f"{name}_sum", label) - metric_sum(before, f"{name}_sum", label)
    return round(total / count * 1000, 1) if count else None


async def settle(http: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until no call is live and the load guard admits again; the last /health document.

    The guard remembers the last 15 s of STT waits, so a level right after an overloaded one would
    otherwise be refused for what its predecessor did.
    """
    deadline = time.monotonic() + timeout
    document = await health(http)
    while (document["active_calls"] or document["load"]["refusing"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        document = await health(http)
    await asyncio.sleep(1.0)
    return await health(http)


async def run_level(
    http: str,
    design: str,
    calls: int,
    turns: list[bytes],
    seconds: float,
    cadence_s: float = 6.0,
    ramp_s: float = 6.0,
    sample_s: float = 2.0,
    seed: int = 7,
) -> LevelResult:
    """`calls` paced callers for `seconds` after a ramp of `ramp_s`; the daemon's readings meanwhile."""
    idle = await settle(http)
    before = await metrics(http)
    rng = random.Random(seed * 1000 + calls)
    until = time.monotonic() + ramp_s + seconds
    loaded_rss: list[int] = []
    stop_sampling = asyncio.Event()

    async def sampler() -> None:
        await asyncio.sleep(ramp_s + 2 * cadence_s)  # every caller is in and past its first turn
        while not stop_sampling.is_set():
            with suppress(aiohttp.ClientError, OSError):
                document = await health(http)
                if document["active_calls"] >= calls:
                    loaded_rss.append(int(document["process"]["rss_bytes"]))
            with suppress(TimeoutError):
                async with asyncio.timeout(sample_s):
                    await stop_sampling.wait()

    async def delayed(index: int) -> CallerResult:
        await asyncio.sleep(ramp_s * index / max(1, calls))
        return await paced_caller(http, turns, until, cadence_s, random.Random(rng.random()))

    sampling = asyncio.create_task(sampler())
    results = await asyncio.gather(*(delayed(i) for i in range(calls)))
    stop_sampling.set()
    await sampling
    await settle(http)
    after = await metrics(http)
    latencies = [s for r in results for s in r.latencies_s]

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000)

    idle_rss = int(idle["process"]["rss_bytes"])
    return LevelResult(
        design=design,
        calls=calls,
        seconds=seconds,
        turns=len(latencies),
        refused=sum(r.refused for r in results),
        failed=sum(bool(r.error) for r in results),
        missed_replies=sum(r.missed_replies for r in results),
        p50_ms=ms(statistics.median(latencies)) if latencies else None,
        p95_ms=ms(percentile(latencies, 0.95)) if latencies else None,
        max_ms=ms(max(latencies)) if latencies else None,
        late_frames=metric_sum(after, "voicebridge_late_frames_total")
        - metric_sum(before, "voicebridge_late_frames_total"),
        rss_idle_mb=round(idle_rss / 2**20, 1),
        rss_loaded_mb=round(statistics.median(loaded_rss) / 2**20, 1) if loaded_rss else 0.0,
        stt_ms=stage_mean_ms(before, after, "stt"),
        errors=sorted({r.error for r in results if r.error})[:5],
    )
