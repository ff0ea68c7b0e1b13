"""STT under concurrency: latency per utterance and utterances/s with 1, 2, 4, … streams at once.

Each of `c` streams transcribes utterances back to back (2-4 s Piper sentences through the 8 kHz μ-law
phone path), as `c` callers finishing turns together would. "shared" is the daemon's engine: one model,
the scheduler's workers (cores // threads). "per-call" is the original design: one model per stream,
each with a worker of its own and no scheduler. In-process, so it isolates STT from the rest of a call.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
from typing import Any

from naive_daemon import own_whisper
from stt_bench import aggregate_wer, percentile

from voicebridge.config.schema import Settings
from voicebridge.speech.models import ModelCache
from voicebridge.speech.stt import WhisperSTT


def rss_mb() -> float:
    """This process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


async def level(
    concurrency: int, audio: list[tuple[str, bytes]], design: str, shared: WhisperSTT | None
) -> dict[str, Any]:
    """One concurrency level of one design: latency p50/p95, utterances/s, WER, model memory."""
    before = rss_mb()
    if shared is not None:
        engines = [shared] * concurrency
    else:
        engines = [own_whisper(Settings().stt, ModelCache()) for _ in range(concurrency)]
    loaded = rss_mb()
    per_stream = max(3, 48 // concurrency)

    async def stream(index: int) -> list[tuple[float, str, str]]:
        done = []
        for k in range(per_stream):
            reference, pcm = audio[(index * 5 + k) % len(audio)]
            transcript = await engines[index].transcribe(pcm, 8000)
            done.append((transcript.processing_seconds, reference, transcript.text))
        return done

    await asyncio.gather(*(engines[i].transcribe(audio[i % len(audio)][1], 8000) for i in range(concurrency)))
    started = time.perf_counter()
    runs = await asyncio.gather(*(stream(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    done = [item for run in runs for item in run]
    seconds = [s for s, _, _ in done]
    if shared is None:
        for engine in engines:
            engine.close()
    return {
        "design": design,
        "concurrency": concurrency,
        "utterances": len(done),
        "p50_ms": round(statistics.median(seconds) * 1000),
        "p95_ms": round(percentile(seconds, 0.95) * 1000),
        "per_second": round(len(done) / wall, 2),
        "wer_pct": round(aggregate_wer([(ref, hyp) for _, ref, hyp in done]) * 100, 1),
        "models_mb": round(loaded - before, 1),
    }


async def stt_concurrency(
    audio: list[tuple[str, bytes]], levels: list[int], naive_levels: list[int]
) -> list[dict[str, Any]]:
    """Every level for the shared engine, then the per-call design at `naive_levels`."""
    rows = []
    shared = WhisperSTT(Settings().stt, ModelCache())
    for concurrency in levels:
        rows.append(await level(concurrency, audio, "shared", shared))
        print(f"  STT shared   x{concurrency:<2d} {rows[-1]}", flush=True)
    shared.close()
    for concurrency in naive_levels:
        rows.append(await level(concurrency, audio, "per-call", None))
        print(f"  STT per-call x{concurrency:<2d} {rows[-1]}", flush=True)
    return rows
