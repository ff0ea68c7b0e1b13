"""Turn-taking against a real daemon: how fast it answers a caller who has finished, and how often it
answers one who has not (a false cut-off).

Two sets, spoken by Piper through the 8 kHz phone path in real time, one turn at a time on one call:
- complete utterances (whole questions and answers): voice-to-voice from the last voiced sample to the
  first reply frame;
- paused utterances: a sentence said in two parts with a silence of 300-900 ms between them, as people
  do when they hesitate ("Um, ..."), read a number in groups, or list things. A reply frame that arrives
  before the caller's last voiced sample is a false cut-off.

Not a test: it prints figures (and writes them as JSON with --json PATH).

    python bench/turn_taking.py [--pauses 300,500,700,900] [--silence-ms 500]
                                [--end-of-turn fixed|adaptive] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from call_latency import SENTENCES, percentile, render

from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import start_daemon

RATE = 8000
# Said in two parts: where people pause mid-turn on the phone.
PAUSED = [
    ("My phone number is nine eight seven six", "five four three two one zero."),
    ("The account number is one two three", "four five six seven."),
    ("Um", "I need to change my booking."),
    ("So the thing is", "my order never arrived."),
    ("I need milk,", "eggs and bread."),
    ("I would like to order", "two pizzas and a bottle of water."),
    ("Can you tell me", "when the clinic opens on Sunday?"),
    ("I was wondering if", "you could help me with my bill."),
    ("My name is", "Priya Sharma."),
    ("I want to book a table for", "four people tonight."),
]
# A reply is waited for this long after the last voiced sample, then the line stays quiet a moment.
REPLY_TIMEOUT_S = 15.0
SETTLE_S = 1.0


@dataclass
class Turn:
    kind: str  # "complete" or "paused"
    text: str
    pause_ms: int
    # Seconds from the last voiced sample to the first reply frame; negative: the reply came before it.
    reply_after_s: float | None

    @property
    def cut_off(self) -> bool:
        return self.reply_after_s is not None and self.reply_after_s < 0


async def speak(caller: SimulatedCaller, pcm: bytes, kind: str, text: str, pause_ms: int) -> Turn:
    started = time.monotonic()
    speech_end = await caller.say(pcm, trailing_silence_s=REPLY_TIMEOUT_S + SETTLE_S + 5)
    first = caller.log.first_frame_after(started)
    if first is None:
        await caller.wait_for_mark(speech_end, REPLY_TIMEOUT_S)
        first = caller.log.first_frame_after(started)
    # Whatever the daemon says now (also the reply to the second half after a cut-off) plays out first.
    await caller.wait_for_mark(max(speech_end, first or 0.0), REPLY_TIMEOUT_S)
    await asyncio.sleep(SETTLE_S)
    return Turn(kind, text, pause_ms, None if first is None else first - speech_end)


async def run(ws: str, pauses: list[int]) -> list[Turn]:
    complete = await render(SENTENCES)
    halves = await render([part for pair in PAUSED for part in pair])
    turns: list[Turn] = []
    async with SimulatedCaller(f"{ws}/ws/stream/CA-turns", provider="exotel", call_sid="CA-turns") as caller:
        await caller.listen_until_mark(timeout=30)
        for text, pcm in zip(SENTENCES, complete, strict=True):
            turns.append(await speak(caller, pcm, "complete", text, 0))
        for pause_ms in pauses:
            gap = bytes(RATE * pause_ms // 1000 * 2)
            for index, (first, second) in enumerate(PAUSED):
                pcm = halves[2 * index] + gap + halves[2 * index + 1]
                turns.append(await speak(caller, pcm, "paused", f"{first} … {second}", pause_ms))
        await caller.stop()
    return turns


def report(turns: list[Turn], silence_ms: int, end_of_turn: str) -> str:
    if end_of_turn == "adaptive":
        lines = [f"end of turn: adaptive (complete/incomplete/unsure defaults, unsure = {silence_ms} ms)"]
    else:
        lines = [f"end of turn: fixed {silence_ms} ms of silence"]
    complete = [t.reply_after_s for t in turns if t.kind == "complete" and t.reply_after_s is not None]
    if complete:
        lines.append(
            f"complete utterances: {len(complete)}, voice-to-voice "
            f"p50 {statistics.median(complete) * 1000:.0f} ms, "
            f"p95 {percentile(complete, 0.95) * 1000:.0f} ms, max {max(complete) * 1000:.0f} ms"
        )
    missed = sum(1 for t in turns if t.reply_after_s is None)
    paused = [t for t in turns if t.kind == "paused"]
    cut = [t for t in paused if t.cut_off]
    if paused:
        share = 100 * len(cut) / len(paused)
        lines.append(f"paused utterances: {len(paused)}, false cut-offs {len(cut)} ({share:.0f}%)")
        for pause_ms in sorted({t.pause_ms for t in paused}):
            at = [t for t in paused if t.pause_ms == pause_ms]
            lines.append(f"  pause {pause_ms:4d} ms: {sum(t.cut_off for t in at)}/{len(at)} cut off")
    lines.append(f"turns with no reply: {missed}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pauses", default="300,500,700,900", help="mid-turn pauses to try, ms")
    parser.add_argument("--silence-ms", type=int, default=500, help="turn.end_of_turn_silence_ms")
    parser.add_argument(
        "--end-of-turn", choices=["fixed", "adaptive"], default="fixed", help="turn.end_of_turn"
    )
    parser.add_argument("--json", type=Path, help="also write every turn as JSON here")
    args = parser.parse_args()
    pauses = [int(p) for p in args.pauses.split(",")]
    with tempfile.TemporaryDirectory() as workdir:
        turn = {"end_of_turn_silence_ms": args.silence_ms, "end_of_turn": args.end_of_turn}
        daemon = start_daemon(Path(workdir), {"turn": turn})
        try:
            turns = asyncio.run(run(daemon.ws, pauses))
        finally:
            daemon.terminate()
    print(report(turns, args.silence_ms, args.end_of_turn))
    if args.json:
        args.json.write_text(json.dumps([asdict(t) for t in turns], indent=1))


if __name__ == "__main__":
    main()
