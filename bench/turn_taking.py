"""Turn-taking against a real daemon: how fast it answers a caller who has finished, and how often it
answers one who has not (a false cut-off).

The sets are in bench/turn_sets.py, spoken by Piper through the 8 kHz phone path in real time, one turn at
a time on one call (echo backend, local STT, Piper):
- complete utterances: voice-to-voice from the last voiced sample to the first reply frame;
- paused utterances: a sentence said in two parts with 300-900 ms of silence between them. A reply frame
  that arrives before the caller's last voiced sample is a false cut-off;
- real recordings (--sets real): each clip is one turn, with whatever pauses its speaker made.

Not a test: it prints figures (and writes every turn as JSON with --json PATH).

    python bench/turn_taking.py [--end-of-turn fixed|adaptive] [--sets tuning,held-out,real]
                                [--pauses 300,500,700,900] [--silence-ms 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from call_latency import percentile, render, stage_means
from turn_sets import SETS, real_clips

from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import start_daemon

RATE = 8000
# A reply is waited for this long after the last voiced sample, then the line stays quiet a moment.
REPLY_TIMEOUT_S = 15.0
SETTLE_S = 1.0
CACHE = Path.home() / ".cache" / "voicebridge-bench"


@dataclass
class Turn:
    set: str
    kind: str  # "complete", "paused" or "real"
    text: str
    pause_ms: int  # the longest silence inside the utterance
    # Seconds from the last voiced sample to the first reply frame; negative: the reply came before it.
    reply_after_s: float | None

    @property
    def cut_off(self) -> bool:
        return self.reply_after_s is not None and self.reply_after_s < 0


async def speak(caller: SimulatedCaller, pcm: bytes, turn: Turn) -> Turn:
    started = time.monotonic()
    speech_end = await caller.say(pcm, trailing_silence_s=REPLY_TIMEOUT_S + SETTLE_S + 5)
    first = caller.log.first_frame_after(started)
    if first is None:
        await caller.wait_for_mark(speech_end, REPLY_TIMEOUT_S)
        first = caller.log.first_frame_after(started)
    # Whatever the daemon says now (also the reply to the second half after a cut-off) plays out first.
    await caller.wait_for_mark(max(speech_end, first or 0.0), REPLY_TIMEOUT_S)
    await asyncio.sleep(SETTLE_S)
    turn.reply_after_s = None if first is None else first - speech_end
    return turn


async def utterances(sets: list[str], pauses: list[int]) -> list[tuple[bytes, Turn]]:
    """Every turn to say, in order, with its audio."""
    said: list[tuple[bytes, Turn]] = []
    for name in sets:
        if name == "real":
            for clip in real_clips(CACHE):
                said.append((clip.pcm, Turn(name, "real", clip.name, max(clip.pauses_ms, default=0), None)))
            continue
        complete, paused = SETS[name]
        for text, pcm in zip(complete, await render(complete), strict=True):
            said.append((pcm, Turn(name, "complete", text, 0, None)))
        halves = await render([part for pair in paused for part in pair])
        for pause_ms in pauses:
            gap = bytes(RATE * pause_ms // 1000 * 2)
            for index, (first, second) in enumerate(paused):
                pcm = halves[2 * index] + gap + halves[2 * index + 1]
                said.append((pcm, Turn(name, "paused", f"{first} … {second}", pause_ms, None)))
    return said


async def run(ws: str, http: str, said: list[tuple[bytes, Turn]]) -> list[Turn]:
    turns: list[Turn] = []
    async with SimulatedCaller(f"{ws}/ws/stream/CA-turns", provider="exotel", call_sid="CA-turns") as caller:
        await caller.listen_until_mark(timeout=30)
        for pcm, turn in said:
            turns.append(await speak(caller, pcm, turn))
        await caller.stop()
    print("daemon stage means (from /metrics):")
    for stage, (mean, count) in sorted((await stage_means(http)).items()):
        print(f"  {stage:18s} {mean * 1000:7.0f} ms  (n={count})")
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        text = await response.text()
    fates = re.findall(r'voicebridge_speculative_transcriptions_total\{fate="(\w+)"\} ([0-9.e+]+)', text)
    print("speculative transcriptions: " + ", ".join(f"{f} {float(n):.0f}" for f, n in fates))
    return turns


def report(turns: list[Turn], settings: str) -> str:
    lines = [settings]
    for name in dict.fromkeys(t.set for t in turns):
        of_set = [t for t in turns if t.set == name]
        lines.append(f"[{name}]")
        answered = [t for t in of_set if t.kind in ("complete", "real") and t.reply_after_s is not None]
        latencies = [t.reply_after_s for t in answered if not t.cut_off and t.reply_after_s is not None]
        if latencies:
            p50, p95 = statistics.median(latencies) * 1000, percentile(latencies, 0.95) * 1000
            lines.append(
                f"  whole utterances: {len(answered)}, voice-to-voice p50 {p50:.0f} ms, p95 {p95:.0f} ms,"
                f" max {max(latencies) * 1000:.0f} ms; cut off {len(answered) - len(latencies)}"
            )
        paused = [t for t in of_set if t.kind == "paused"]
        if paused:
            cut = sum(t.cut_off for t in paused)
            share = 100 * cut / len(paused)
            lines.append(f"  paused utterances: {len(paused)}, false cut-offs {cut} ({share:.1f}%)")
            for pause_ms in sorted({t.pause_ms for t in paused}):
                at = [t for t in paused if t.pause_ms == pause_ms]
                lines.append(f"    pause {pause_ms:4d} ms: {sum(t.cut_off for t in at)}/{len(at)} cut off")
        for turn in of_set:
            if turn.cut_off or turn.reply_after_s is None:
                after = turn.reply_after_s
                state = "no reply" if after is None else f"cut off, reply {-after * 1000:.0f} ms early"
                lines.append(f"    {state}: {turn.text} ({turn.pause_ms} ms)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", default="tuning,dev,held-out,real", help="of: tuning, dev, held-out, real")
    parser.add_argument("--pauses", default="300,500,700,900", help="mid-turn pauses to try, ms")
    parser.add_argument("--end-of-turn", choices=["fixed", "adaptive"], default="adaptive")
    parser.add_argument("--silence-ms", type=int, help="turn.end_of_turn_silence_ms (default: the daemon's)")
    parser.add_argument("--speculative-ms", type=int, help="turn.speculative_ms (default: the daemon's)")
    parser.add_argument("--complete-ms", type=int, help="turn.complete_turn_ms (default: the daemon's)")
    parser.add_argument("--json", type=Path, help="also write every turn as JSON here")
    parser.add_argument("--log", type=Path, help="keep the daemon's log (at DEBUG: each pause's judgement)")
    args = parser.parse_args()
    pauses = [int(p) for p in args.pauses.split(",") if p]
    chosen = {
        "end_of_turn": args.end_of_turn,
        "end_of_turn_silence_ms": args.silence_ms,
        "speculative_ms": args.speculative_ms,
        "complete_turn_ms": args.complete_ms,
    }
    turn = {key: value for key, value in chosen.items() if value is not None}
    said = asyncio.run(utterances([s for s in args.sets.split(",") if s], pauses))
    with tempfile.TemporaryDirectory() as workdir:
        overrides = {"turn": turn, "logging": {"level": "DEBUG" if args.log else "INFO"}}
        daemon = start_daemon(Path(workdir), overrides)
        try:
            turns = asyncio.run(run(daemon.ws, daemon.http, said))
        finally:
            daemon.terminate()
            if args.log:
                args.log.write_text(daemon.log())
    print(report(turns, "end of turn: " + ", ".join(f"{k}={v}" for k, v in turn.items())))
    if args.json:
        args.json.write_text(json.dumps([asdict(t) for t in turns], indent=1))


if __name__ == "__main__":
    main()
