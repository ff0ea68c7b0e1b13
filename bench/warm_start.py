"""Warm start: is the first call after start-up as fast as the tenth, alone and on a busy machine?

Each phase starts a fresh daemon (embedded defaults, echo backend) and, once `/ready` says yes, places
calls of one turn each (a greeting, one caller sentence, the reply):
- alone: ten calls one after another; the first call's voice-to-voice against the tenth's;
- busy: a first wave of N calls at once the moment the daemon is ready, then, after it, a second wave of
  N; the first wave's median against the second's (what one caller sees when the daemon has just
  restarted under load).

Not a test: it prints figures.

    python bench/warm_start.py [--calls 10] [--wave 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from call_latency import SENTENCES, render

from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import start_daemon


async def one_call(ws: str, sid: str, pcm: bytes) -> float | None:
    async with SimulatedCaller(f"{ws}/ws/stream/{sid}", provider="exotel", call_sid=sid) as caller:
        await caller.listen_until_mark(timeout=30)
        result = await caller.turn(pcm, timeout=30, silence_s=1.0)
        await caller.stop()
    return result.latency


def ms(value: float | None) -> str:
    return "no reply" if value is None else f"{value * 1000:.0f} ms"


async def alone(ws: str, calls: int, speech: list[bytes]) -> str:
    latencies = [await one_call(ws, f"CA-alone-{n}", speech[n % len(speech)]) for n in range(calls)]
    first, last = latencies[0], latencies[-1]
    lines = ["alone: " + ", ".join(ms(v) for v in latencies)]
    if first is not None and last is not None:
        lines.append(f"  first {ms(first)}, call {calls} {ms(last)}: {100 * (first / last - 1):+.0f}%")
    return "\n".join(lines)


async def busy(ws: str, wave: int, speech: list[bytes]) -> str:
    waves = []
    for name in ("first", "second"):
        calls = [one_call(ws, f"CA-{name}-{n}", speech[n % len(speech)]) for n in range(wave)]
        waves.append([v for v in await asyncio.gather(*calls) if v is not None])
    first, second = (statistics.median(w) if w else None for w in waves)
    lines = [f"busy: {wave} calls at once right after start, then {wave} more"]
    for name, values, median in zip(("first", "second"), waves, (first, second), strict=True):
        lines.append(f"  {name} wave: median {ms(median)}, max {ms(max(values, default=None))}")
    if first is not None and second is not None:
        lines.append(f"  first wave against second: {100 * (first / second - 1):+.0f}%")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--wave", type=int, default=8)
    args = parser.parse_args()
    speech = asyncio.run(render(SENTENCES[:8]))
    for phase in (alone, busy):
        with tempfile.TemporaryDirectory() as workdir:
            daemon = start_daemon(Path(workdir))  # returns once /ready says yes
            try:
                count = args.calls if phase is alone else args.wave
                print(asyncio.run(phase(daemon.ws, count, speech)))
            finally:
                daemon.terminate()


if __name__ == "__main__":
    main()
