"""Soak: N simulated callers placing back-to-back calls for M minutes; does the daemon give everything back?

Each of the N caller slots places a scripted call the way the provider would (incoming webhook → media
stream, three Piper-rendered turns at 8 kHz, real-time pacing), and when it ends places the next, until
M minutes have passed; slot starts are staggered over N/2 seconds. A sampler reads the daemon's /health
every --sample-s seconds: active calls and the process's RSS, open file descriptors and asyncio tasks.

The comparison is idle against idle, because fds and tasks during calls say nothing about leaks:

- warm-up: back-to-back calls on every slot for --warmup-s (default 120 s; 0 = one call per slot), so
  lazy imports, worker threads and every per-call code path exist, and RSS has reached the plateau that
  concurrent inference grows it to: in a 10-caller run it climbs ~25% over the first ~40 calls, then
  stays flat; a baseline taken before that would call the climb a leak;
- baseline: once those calls have ended and the daemon has settled, the lowest of three readings;
- final: after the M minutes no new calls start; once every call has ended and the daemon has settled
  again, readings continue (up to 10 s) until fds and tasks are back, and the lowest is taken.

Targets (each PASS/FAIL; exit code 0 only if all pass):

- RSS growth, final vs baseline, <= 5%;
- open fds back to baseline, with 2 fds of slack for a socket still being torn down by the kernel or a
  library; a per-call leak exceeds that within a few calls, and the full run places hundreds;
- asyncio tasks back to baseline exactly: an idle daemon has no reason for one extra task;
- the daemon's active_calls back to 0, no failed calls, and no new unhandled exceptions (/metrics).

Starts its own daemon (embedded defaults, temp dir) unless --url names one; /health and /metrics must
answer from here (loopback, or --token for the management bearer token). The full run:

    python bench/soak.py --calls 20 --minutes 30

Short versions: `--calls 10 --minutes 3`; tests/wire/test_soak.py runs `--calls 3 --minutes 0.5 --warmup-s 0`
with a loose RSS limit (its warm-up is too short for the plateau). Table phases: cold (before any
call), warmup, drain (waiting for calls to end), idle (settling), baseline, soak, final.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from voicebridge.audio.levels import trim_trailing_quiet
from voicebridge.config.schema import Settings
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.sim.scripted import CallScript, percentile, run_call
from voicebridge.speech.models import ModelCache
from voicebridge.speech.tts.piper import PiperTTS

SENTENCES = [
    "I need to change my booking.",
    "What time do you open on Saturday?",
    "Thank you, that is all.",
]
SAMPLE_RATE = 8000

RSS_GROWTH_LIMIT_PCT = 5.0
FD_SLACK = 2
# After the last call ends: a fixed pause, then idle readings once a second for up to SETTLE_MAX_S.
SETTLE_S = 3.0
SETTLE_MAX_S = 10.0
IDLE_READINGS = 3
# How long the daemon may take to report 0 active calls once every caller has hung up.
DRAIN_TIMEOUT_S = 60.0
TABLE_ROWS = 30


class ProbeError(Exception):
    """The daemon's /health or /metrics did not answer properly."""


@dataclass(slots=True)
class Sample:
    """One /health reading (elapsed from the start of measuring)."""

    elapsed_s: float
    phase: str
    active_calls: int
    calls_done: int
    rss_bytes: int
    open_fds: int
    asyncio_tasks: int
    python_blocks: int


@dataclass(slots=True)
class CallOutcome:
    """What is kept of one call: the caller's audio log is dropped, or hours of calls would fill memory."""

    slot: int
    phase: str
    ok: bool
    error: str
    latencies_s: list[float]
    duration_s: float


class Probe:
    """Reads /health and /metrics over a connection of its own for every request.

    One request at a time, each on a fresh connection closed after it: every reading then sees exactly
    one socket of ours in the daemon's fd count, instead of a keep-alive pool whose size varies.
    """

    def __init__(self, http: str, token: str | None) -> None:
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Probe:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, force_close=True),
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=10),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str) -> str:
        assert self._session is not None
        try:
            async with self._session.get(f"{self._http}{path}") as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProbeError(f"{path}: {exc or type(exc).__name__}") from None
        if response.status != 200:
            raise ProbeError(f"{path} answered {response.status}: {text.strip()[:120]}")
        return text

    async def health(self) -> dict[str, Any]:
        document = json.loads(await self._get("/health"))
        if "process" not in document:
            raise ProbeError("/health has no `process` section (a daemon older than the soak test)")
        return document

    async def metric(self, name: str) -> float:
        """A counter's value from /metrics (0 when it was never incremented or is absent)."""
        found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", await self._get("/metrics"), re.M)
        return float(found.group(1)) if found else 0.0


class Soak:
    """The run: warm-up calls, idle baseline, M minutes of back-to-back calls, idle final reading."""

    def __init__(
        self,
        http: str,
        probe: Probe,
        script: CallScript,
        calls: int,
        minutes: float,
        sample_s: float,
        warmup_s: float = 0.0,
        rss_limit_pct: float = RSS_GROWTH_LIMIT_PCT,
    ) -> None:
        self.http = http
        self.probe = probe
        self.script = script
        self.slots = calls
        self.minutes = minutes
        self.sample_s = sample_s
        self.warmup_s = warmup_s
        self.rss_limit_pct = rss_limit_pct
        self.phase = "cold"
        self.samples: list[Sample] = []
        self.outcomes: list[CallOutcome] = []
        self.health_errors: list[str] = []
        self.started = time.monotonic()

    # --- readings ---------------------------------------------------------------------------------

    async def sample(self, phase: str | None = None) -> Sample:
        document = await self.probe.health()
        process = document["process"]
        reading = Sample(
            elapsed_s=round(time.monotonic() - self.started, 1),
            phase=phase or self.phase,
            active_calls=int(document["active_calls"]),
            calls_done=len(self.outcomes),
            rss_bytes=int(process["rss_bytes"]),
            open_fds=int(process["open_fds"]),
            asyncio_tasks=int(process["asyncio_tasks"]),
            python_blocks=int(process.get("python_blocks", -1)),
        )
        self.samples.append(reading)
        return reading

    async def sampler(self) -> None:
        """Read /health every sample_s until cancelled, printing progress to stderr."""
        while True:
            try:
                reading = await self.sample()
            except ProbeError as exc:
                # A missed reading is reported; the run goes on (the idle readings must succeed).
                self.health_errors.append(str(exc))
                print(f"[{time.monotonic() - self.started:6.0f} s] /health failed: {exc}", file=sys.stderr)
            else:
                failed = sum(not o.ok for o in self.outcomes)
                print(
                    f"[{reading.elapsed_s:6.0f} s] {reading.phase:7s} {reading.active_calls:3d} active, "
                    f"{reading.calls_done} calls done ({failed} failed), RSS {_mb(reading.rss_bytes)}, "
                    f"{reading.open_fds} fds, {reading.asyncio_tasks} tasks",
                    file=sys.stderr,
                    flush=True,
                )
            await asyncio.sleep(self.sample_s)

    async def wait_drained(self) -> bool:
        """Wait for the daemon to report no active calls; False if it still has some after the timeout."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            if int((await self.probe.health())["active_calls"]) == 0:
                return True
            await asyncio.sleep(0.5)
        return False

    async def idle_reading(self, phase: str, target: Sample | None = None) -> Sample:
        """The idle figures: after SETTLE_S, the lowest of a few readings a second apart.

        With a `target`, readings go on (up to SETTLE_MAX_S) until fds and tasks are back to it, so a
        socket closed a few seconds late is not called a leak, while one that stays open is.
        """
        await asyncio.sleep(SETTLE_S)
        deadline = time.monotonic() + SETTLE_MAX_S
        readings: list[Sample] = []
        while True:
            readings.append(await self.sample(phase))
            low = _lowest(readings, phase)
            settled = target is None or (
                low.open_fds <= target.open_fds + FD_SLACK and low.asyncio_tasks <= target.asyncio_tasks
            )
            if (len(readings) >= IDLE_READINGS and settled) or time.monotonic() >= deadline:
                return low
            await asyncio.sleep(1.0)

    # --- calls ------------------------------------------------------------------------------------

    async def place(self, slot: int, phase: str) -> None:
        """One call from this slot's own number (a rate-limited daemon would refuse one shared number)."""
        script = replace(self.script, from_number=f"+9198000{slot:05d}")
        began = time.monotonic()
        try:
            report = await run_call(self.http, script)
            ok, error = report.ok, report.error
            latencies = [t.latency_s for t in report.turns if t.latency_s is not None]
        except Exception as exc:  # run_call reports what the daemon does; anything else is counted too
            ok, error, latencies = False, f"{type(exc).__name__}: {exc}", []
        self.outcomes.append(CallOutcome(slot, phase, ok, error, latencies, time.monotonic() - began))

    async def slot_loop(self, slot: int, phase: str, stagger_s: float, until: float) -> None:
        """Calls back to back from one slot: the first after `stagger_s`, the last starting before `until`."""
        await asyncio.sleep(stagger_s)
        await self.place(slot, phase)
        while time.monotonic() < until:
            await self.place(slot, phase)

    async def run(self) -> dict[str, Any]:
        unhandled_before = await self.probe.metric("voicebridge_unhandled_exceptions_total")
        late_before = await self.probe.metric("voicebridge_late_frames_total")
        cold = await self.sample()
        sampler = asyncio.create_task(self.sampler())
        try:
            stagger = [slot * 0.5 for slot in range(self.slots)]  # N slots over N/2 seconds
            self.phase = "warmup"
            until = time.monotonic() + self.warmup_s
            await asyncio.gather(
                *(self.slot_loop(slot, "warmup", stagger[slot], until) for slot in range(self.slots))
            )
            self.phase = "drain"
            warm_drained = await self.wait_drained()
            self.phase = "idle"
            baseline = await self.idle_reading("baseline")

            self.phase = "soak"
            soak_started = time.monotonic()
            until = soak_started + self.minutes * 60
            await asyncio.gather(
                *(self.slot_loop(slot, "soak", stagger[slot], until) for slot in range(self.slots))
            )
            soak_s = time.monotonic() - soak_started
            self.phase = "drain"
            drained = await self.wait_drained()
            self.phase = "idle"
            final = await self.idle_reading("final", target=baseline)
        finally:
            sampler.cancel()
            with suppress(asyncio.CancelledError):
                await sampler
        unhandled = await self.probe.metric("voicebridge_unhandled_exceptions_total") - unhandled_before
        late = await self.probe.metric("voicebridge_late_frames_total") - late_before
        return self.summary(cold, baseline, final, warm_drained and drained, unhandled, late, soak_s)

    # --- summary ----------------------------------------------------------------------------------

    def summary(
        self,
        cold: Sample,
        baseline: Sample,
        final: Sample,
        drained: bool,
        unhandled: float,
        late: float,
        soak_s: float,
    ) -> dict[str, Any]:
        soak = [o for o in self.outcomes if o.phase == "soak"]
        failures = Counter(_reason(o.error) for o in self.outcomes if not o.ok)
        latencies = [lat for o in soak for lat in o.latencies_s]
        growth = (final.rss_bytes - baseline.rss_bytes) / baseline.rss_bytes * 100
        peak = max(s.rss_bytes for s in self.samples)
        # Not a target (readings under load swing by tens of MB), but a leak shows as a rising trend here
        # while a warm-up plateau does not: median RSS over the first and the last quarter of the soak.
        loaded = [s.rss_bytes for s in self.samples if s.phase == "soak"]
        quarter = max(1, len(loaded) // 4)
        trend = (
            (round(statistics.median(loaded[:quarter])), round(statistics.median(loaded[-quarter:])))
            if loaded
            else None
        )
        targets = {
            "rss_growth": (
                growth <= self.rss_limit_pct,
                f"{growth:+.1f}% (limit {self.rss_limit_pct:g}%)",
            ),
            "open_fds": (
                final.open_fds <= baseline.open_fds + FD_SLACK,
                f"{baseline.open_fds} → {final.open_fds} (slack {FD_SLACK})",
            ),
            "asyncio_tasks": (
                final.asyncio_tasks <= baseline.asyncio_tasks,
                f"{baseline.asyncio_tasks} → {final.asyncio_tasks}",
            ),
            "calls_drained": (
                drained,
                "active_calls back to 0" if drained else "active_calls stayed above 0",
            ),
            "no_failed_calls": (not failures, f"{sum(failures.values())} failed"),
            "no_unhandled_exceptions": (unhandled == 0, f"{unhandled:.0f} new"),
        }
        return {
            "calls_completed": sum(o.ok for o in soak),
            "calls_failed": sum(not o.ok for o in soak),
            "warmup_calls": sum(o.phase == "warmup" for o in self.outcomes),
            "warmup_failed": sum(o.phase == "warmup" and not o.ok for o in self.outcomes),
            "failure_reasons": dict(failures),
            "soak_s": round(soak_s, 1),
            "mean_call_s": round(statistics.fmean(o.duration_s for o in soak), 1) if soak else None,
            "turns": len(latencies),
            "v2v_p50_ms": round(statistics.median(latencies) * 1000) if latencies else None,
            "v2v_p95_ms": round(percentile(latencies, 0.95) * 1000) if latencies else None,
            "v2v_max_ms": round(max(latencies) * 1000) if latencies else None,
            "rss_cold_bytes": cold.rss_bytes,
            "rss_baseline_bytes": baseline.rss_bytes,
            "rss_peak_bytes": peak,
            "rss_final_bytes": final.rss_bytes,
            "rss_growth_pct": round(growth, 2),
            "rss_soak_first_last_quarter_bytes": trend,
            "fds_cold": cold.open_fds,
            "fds_baseline": baseline.open_fds,
            "fds_peak": max(s.open_fds for s in self.samples),
            "fds_final": final.open_fds,
            "tasks_cold": cold.asyncio_tasks,
            "tasks_baseline": baseline.asyncio_tasks,
            "tasks_peak": max(s.asyncio_tasks for s in self.samples),
            "tasks_final": final.asyncio_tasks,
            "python_blocks_baseline": baseline.python_blocks,
            "python_blocks_final": final.python_blocks,
            "unhandled_exceptions": round(unhandled),
            "late_frames": round(late),
            "health_errors": len(self.health_errors),
            "targets": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in targets.items()},
            "passed": all(ok for ok, _ in targets.values()),
        }


def _lowest(readings: list[Sample], phase: str) -> Sample:
    """Each figure's lowest value over idle readings: a transient socket or task in one is not kept."""
    return Sample(
        elapsed_s=readings[-1].elapsed_s,
        phase=phase,
        active_calls=min(r.active_calls for r in readings),
        calls_done=readings[-1].calls_done,
        rss_bytes=min(r.rss_bytes for r in readings),
        open_fds=min(r.open_fds for r in readings),
        asyncio_tasks=min(r.asyncio_tasks for r in readings),
        python_blocks=min(r.python_blocks for r in readings),
    )


def _reason(error: str) -> str:
    """A failure message with call-specific parts removed, so equal failures count together."""
    error = re.sub(r"wss?://\S+", "<url>", error)
    return re.sub(r"\bCA-[\w-]+", "<call>", error)


def _mb(value: int) -> str:
    return f"{value / 1e6:.1f} MB"


def render_turns(sentences: list[str]) -> list[tuple[str, bytes]]:
    """The caller's turns: Piper speech at 8 kHz with the quiet tail cut (timing starts at the last word)."""
    engine = PiperTTS(Settings().tts, ModelCache())

    async def one(text: str) -> bytes:
        return b"".join([piece async for piece in engine.synthesize(text, SAMPLE_RATE)])

    try:
        return [(text, trim_trailing_quiet(asyncio.run(one(text)), SAMPLE_RATE)) for text in sentences]
    finally:
        engine.close()


def print_report(samples: list[Sample], summary: dict[str, Any]) -> None:
    """The samples as a table (thinned to about TABLE_ROWS rows), then the summary and the targets."""
    shown = samples
    if len(samples) > TABLE_ROWS:
        picks = sorted({round(i * (len(samples) - 1) / (TABLE_ROWS - 1)) for i in range(TABLE_ROWS)})
        shown = [samples[i] for i in picks]
        print(f"{len(shown)} of {len(samples)} samples (all of them with --json):")
    print(
        f"{'t (s)':>7s}  {'phase':8s} {'active':>6s} {'calls':>6s} {'RSS (MB)':>9s} {'fds':>5s} {'tasks':>6s}"
    )
    for s in shown:
        print(
            f"{s.elapsed_s:7.0f}  {s.phase:8s} {s.active_calls:6d} {s.calls_done:6d} "
            f"{s.rss_bytes / 1e6:9.1f} {s.open_fds:5d} {s.asyncio_tasks:6d}"
        )
    m = summary
    print()
    print(
        f"calls: {m['calls_completed']} completed, {m['calls_failed']} failed in {m['soak_s']:.0f} s "
        f"(mean {m['mean_call_s']} s a call), after {m['warmup_calls']} warm-up calls "
        f"({m['warmup_failed']} failed)"
    )
    for reason, count in sorted(m["failure_reasons"].items(), key=lambda item: -item[1]):
        print(f"  {count:4d} × {reason}")
    if m["turns"]:
        print(
            f"voice-to-voice over {m['turns']} turns: p50 {m['v2v_p50_ms']} ms, p95 {m['v2v_p95_ms']} ms, "
            f"max {m['v2v_max_ms']} ms"
        )
    print(
        f"RSS: cold {_mb(m['rss_cold_bytes'])}, baseline {_mb(m['rss_baseline_bytes'])}, peak "
        f"{_mb(m['rss_peak_bytes'])}, final {_mb(m['rss_final_bytes'])} ({m['rss_growth_pct']:+.1f}%)"
    )
    if trend := m["rss_soak_first_last_quarter_bytes"]:
        print(f"RSS under load (median, first → last quarter of the soak): {_mb(trend[0])} → {_mb(trend[1])}")
    print(f"Python heap blocks: baseline {m['python_blocks_baseline']:,}, final {m['python_blocks_final']:,}")
    print(f"open fds: baseline {m['fds_baseline']}, peak {m['fds_peak']}, final {m['fds_final']}")
    print(f"asyncio tasks: baseline {m['tasks_baseline']}, peak {m['tasks_peak']}, final {m['tasks_final']}")
    print(
        f"unhandled exceptions: {m['unhandled_exceptions']}; late outbound frames: {m['late_frames']}; "
        f"missed /health readings: {m['health_errors']}"
    )
    print()
    for name, target in m["targets"].items():
        print(f"  {'PASS' if target['ok'] else 'FAIL'}  {name:24s} {target['detail']}")
    print(f"\n{'PASS' if m['passed'] else 'FAIL'}")


async def soak(
    http: str,
    token: str | None,
    script: CallScript,
    calls: int,
    minutes: float,
    sample_s: float,
    warmup_s: float,
    rss_limit_pct: float,
) -> tuple[list[Sample], dict[str, Any]]:
    async with Probe(http, token) as probe:
        run = Soak(http, probe, script, calls, minutes, sample_s, warmup_s, rss_limit_pct)
        summary = await run.run()
        return run.samples, summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20, help="concurrent caller slots (default 20)")
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to keep placing calls")
    parser.add_argument("--provider", choices=["exotel", "twilio"], default="exotel")
    parser.add_argument("--url", help="existing daemon, e.g. http://127.0.0.1:8080 (default: start one)")
    parser.add_argument("--token", help="management bearer token, for a daemon beyond loopback")
    parser.add_argument(
        "--sample-s", type=float, help="seconds between /health readings (default 10; 2 under 5 minutes)"
    )
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=120.0,
        help="back-to-back calls before the baseline (default 120; 0: one call per slot)",
    )
    parser.add_argument(
        "--rss-limit-pct",
        type=float,
        default=RSS_GROWTH_LIMIT_PCT,
        help="RSS growth target (default 5; short runs are dominated by warm-up, the CI run uses 25)",
    )
    parser.add_argument("--json", type=Path, help="write every sample and the summary here")
    args = parser.parse_args()
    if args.calls < 1 or args.minutes <= 0 or args.warmup_s < 0:
        parser.error("--calls must be at least 1, --minutes above 0 and --warmup-s not negative")
    sample_s = args.sample_s or (2.0 if args.minutes < 5 else 10.0)

    print(f"rendering {len(SENTENCES)} caller turns with Piper …", file=sys.stderr)
    script = CallScript(render_turns(SENTENCES), provider=args.provider, sample_rate=SAMPLE_RATE)
    print(
        f"{args.calls} {args.provider} callers for {args.minutes:g} min, {len(script.turns)} turns a call, "
        f"after {args.warmup_s:g} s of warm-up calls, /health every {sample_s:g} s",
        file=sys.stderr,
    )

    def go(http: str) -> tuple[list[Sample], dict[str, Any]]:
        return asyncio.run(
            soak(
                http,
                args.token,
                script,
                args.calls,
                args.minutes,
                sample_s,
                args.warmup_s,
                args.rss_limit_pct,
            )
        )

    daemon: DaemonProcess | None = None
    try:
        if args.url:
            http = args.url.rstrip("/").replace("ws://", "http://", 1).replace("wss://", "https://", 1)
            samples, summary = go(http)
        else:
            with tempfile.TemporaryDirectory(prefix="voicebridge-soak-") as workdir:
                # Room for every slot (the default capacity, 30, would refuse a bigger soak's calls), and
                # no refusals by load: a soak holds its load to see what the daemon gives back after it.
                overrides: dict[str, Any] = {
                    "server": {"max_concurrent_calls": max(30, args.calls)},
                    "calls": dict.fromkeys(
                        ("overload_stt_wait_ms", "overload_loop_lag_ms", "overload_stt_utilisation"), 0
                    ),
                }
                # Measure the daemon as the systemd unit and the image run it.
                os.environ.setdefault("MALLOC_ARENA_MAX", "2")
                daemon = start_daemon(Path(workdir), overrides)
                try:
                    samples, summary = go(daemon.http)
                    summary["targets"]["daemon_up"] = {
                        "ok": daemon.process.poll() is None,
                        "detail": "running" if daemon.process.poll() is None else "exited during the run",
                    }
                    summary["passed"] = all(t["ok"] for t in summary["targets"].values())
                finally:
                    code = daemon.terminate()
                    errors = [line for line in daemon.log().splitlines() if "ERROR" in line]
                    print(f"daemon exited with {code}; {len(errors)} ERROR lines in its log", file=sys.stderr)
                    for line in errors[-10:]:
                        print(f"  {line[:300]}", file=sys.stderr)
    except ProbeError as exc:
        print(f"soak aborted: the daemon stopped answering ({exc})", file=sys.stderr)
        return 1
    print_report(samples, summary)
    if args.json:
        document = {
            "settings": {
                "calls": args.calls,
                "minutes": args.minutes,
                "provider": args.provider,
                "sample_s": sample_s,
                "warmup_s": args.warmup_s,
                "rss_limit_pct": args.rss_limit_pct,
                "turns": [label for label, _ in script.turns],
            },
            "samples": [asdict(s) for s in samples],
            "summary": summary,
        }
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
