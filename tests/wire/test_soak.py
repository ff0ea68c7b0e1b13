"""The soak benchmark in short: 3 back-to-back callers for 30 s must leave the daemon as they found it.

Runs `bench/soak.py` as a subprocess (it starts its own daemon) and checks its JSON summary. The full
figure is the 30-minute run: `python bench/soak.py --calls 20 --minutes 30`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_gives_everything_back(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    # The bench's daemon must run on the embedded defaults, whatever this shell's VOICEBRIDGE_ settings say.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    # One warm-up call per slot (--warmup-s 0) keeps this near a minute, but leaves the daemon short of its
    # RSS plateau: RSS still climbs under load for the first few dozen calls with no leak at all. So RSS is
    # held only loosely here (25%, not the 5% target); the 30-minute run, after 2 minutes of warm-up
    # calls, is what judges it. fds and tasks need no warm-up: they are back to baseline after every call.
    command = [sys.executable, "bench/soak.py", "--calls", "3", "--minutes", "0.5", "--sample-s", "2"]
    result = subprocess.run(
        [*command, "--warmup-s", "0", "--rss-limit-pct", "25", "--json", str(report)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, output
    summary = json.loads(report.read_text())["summary"]

    assert summary["calls_completed"] >= 3, output
    assert summary["calls_failed"] == 0 and summary["warmup_failed"] == 0, summary["failure_reasons"]
    assert summary["fds_final"] <= summary["fds_baseline"] + 2, output
    assert summary["tasks_final"] <= summary["tasks_baseline"], output
    assert summary["unhandled_exceptions"] == 0, output
    assert summary["rss_growth_pct"] < 25, output  # loosely, as above
