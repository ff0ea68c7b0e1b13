"""Calls held by one node against three nodes on this machine (issue 19), through one webhook entry point.

The same paced callers as bench/suite.py's concurrency levels (2-4 s turns every ~6 s, Exotel framing,
real time; TTS is the Azure fake, as in production) are offered to node 1's incoming webhook: first with
one daemon and no [cluster], then with three daemons sharing a redis-server, each with its own
`server.node_url`, so node 1's webhook places every call on the least loaded node. Per level it reports
the calls each node was given and answered, each node's voice-to-voice p50/p95 and late frames, and the
whole level's.

Read it for what it is: the three nodes share this machine's two cores, so three nodes cannot hold three
times the calls here. What it shows is the placement balance and that the cluster costs no latency; the
capacity of separate machines is one node's figure times the nodes.

    .venv/bin/python bench/cluster.py                      # levels 30,60,90; ~12 min
    .venv/bin/python bench/cluster.py --levels 20 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# bench/'s own modules import as siblings: `python bench/cluster.py` puts this folder on sys.path.
from loadgen import CallerResult, metric_sum, metrics, paced_caller, run_level, settle
from suite import azure_fake, azure_overrides, render_audio

from voicebridge.sim.daemon import DaemonProcess, free_port, start_daemon
from voicebridge.sim.redis_server import start_redis_server
from voicebridge.sim.scripted import percentile

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def nodes(workdir: Path, count: int, azure_host: str) -> Iterator[list[DaemonProcess]]:
    """`count` daemons; with more than one, sharing a redis-server and placing calls on each other."""
    redis = start_redis_server(workdir / "redis") if count > 1 else None
    daemons: list[DaemonProcess] = []
    try:
        for number in range(1, count + 1):
            overrides = azure_overrides(azure_host, per_call_model=False)
            if redis is not None:
                port = free_port()
                overrides["server"] |= {
                    "port": port,
                    "node_url": f"ws://127.0.0.1:{port}",
                    "stream_secret": "bench-cluster-secret",
                }
                overrides["cluster"] = {"redis_url": redis.url, "node_id": f"node-{number}"}
            daemons.append(start_daemon(workdir / f"{count}-nodes-{number}", overrides))
        yield daemons
    finally:
        for daemon in daemons:
            daemon.terminate()
        if redis is not None:
            redis.stop()


def ms(values: list[float], share: float) -> float | None:
    return round(percentile(values, share) * 1000) if values else None


async def level(
    daemons: list[DaemonProcess], calls: int, turns: list[bytes], seconds: float, ramp_s: float = 6.0
) -> dict[str, Any]:
    """`calls` paced callers through node 1's webhook; what each node got and how it answered."""
    for daemon in daemons:
        await settle(daemon.http)
    before = [await metrics(daemon.http) for daemon in daemons]
    rng = random.Random(1000 + calls)
    until = time.monotonic() + ramp_s + seconds

    async def delayed(index: int) -> CallerResult:
        await asyncio.sleep(ramp_s * index / max(1, calls))
        return await paced_caller(daemons[0].http, turns, until, 6.0, random.Random(rng.random()))

    results = await asyncio.gather(*(delayed(i) for i in range(calls)))
    for daemon in daemons:
        await settle(daemon.http)
    after = [await metrics(daemon.http) for daemon in daemons]
    per_node = []
    for number, daemon in enumerate(daemons):
        host = f"127.0.0.1:{daemon.port}"
        mine = [r for r in results if r.stream_host == host]
        latencies = [s for r in mine for s in r.latencies_s]
        late = metric_sum(after[number], "voicebridge_late_frames_total") - metric_sum(
            before[number], "voicebridge_late_frames_total"
        )
        per_node.append(
            {
                "node": f"node-{number + 1}",
                "calls_placed": len(mine),
                "refused": sum(r.refused for r in mine),
                "failed": sum(bool(r.error) for r in mine),
                "turns": len(latencies),
                "p50_ms": ms(latencies, 0.5),
                "p95_ms": ms(latencies, 0.95),
                "late_frames": late,
            }
        )
    everything = [s for r in results for s in r.latencies_s]
    return {
        "nodes": len(daemons),
        "calls": calls,
        "refused": sum(r.refused for r in results),
        "failed": sum(bool(r.error) for r in results),
        "missed_replies": sum(r.missed_replies for r in results),
        "turns": len(everything),
        "p50_ms": ms(everything, 0.5),
        "p95_ms": ms(everything, 0.95),
        "late_frames": sum(node["late_frames"] for node in per_node),
        "per_node": per_node,
        "errors": sorted({r.error for r in results if r.error})[:5],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| nodes | calls offered | refused | p50 / p95 ms | late frames "
        "| per node: placed (refused) p50/p95 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        nodes_text = "; ".join(
            f"{n['node']} {n['calls_placed']} ({n['refused']}) {n['p50_ms']}/{n['p95_ms']}"
            for n in row["per_node"]
        )
        lines.append(
            f"| {row['nodes']} | {row['calls']} | {row['refused']} | {row['p50_ms']} / {row['p95_ms']} | "
            f"{row['late_frames']:.0f} | {nodes_text} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    print("rendering caller turns and the Azure fake's reply with Piper …", flush=True)
    turns, reply = await render_audio()
    rows: list[dict[str, Any]] = []
    with azure_fake(workdir, reply, 150.0) as host:
        for count in (1, 3):
            with nodes(workdir, count, host) as daemons:
                for daemon in daemons:  # every engine path once, on every node, before the figures
                    await run_level(daemon.http, "warm-up", 2, turns, 6.0, ramp_s=1.0)
                for calls in args.levels:
                    row = await level(daemons, calls, turns, args.seconds)
                    rows.append(row)
                    print(
                        f"  {count} node(s), {calls} calls: p50 {row['p50_ms']} p95 {row['p95_ms']} ms, "
                        f"refused {row['refused']}, failed {row['failed']}, late {row['late_frames']:.0f}; "
                        + ", ".join(f"{n['node']} {n['calls_placed']}" for n in row["per_node"]),
                        flush=True,
                    )
    return {"command": " ".join(["python", "bench/cluster.py", *sys.argv[1:]]), "levels": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[30, 60, 90])
    parser.add_argument("--seconds", type=float, default=30.0, help="each level's length after its ramp")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cluster.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vb-cluster-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results["levels"]))
    print(f"raw figures: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
