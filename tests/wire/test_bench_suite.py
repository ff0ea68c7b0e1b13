"""The benchmark suite runs end to end (its --quick smoke version) and writes its table and plot.

The figures themselves are the suite's business (never timed assertions here); this keeps the one
documented command working, with every phase against real daemons, the Azure fake and real models.
One load level per design is enough to show each phase runs: the rising levels of --quick (1 and 3
calls, 1 and 2 per-call) took a minute of the suite's wall clock and checked nothing more.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_the_quick_suite_measures_every_phase_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    one_level_each = ["--levels", "1", "--naive-levels", "1"]
    run = subprocess.run(
        [sys.executable, "bench/suite.py", "--quick", *one_level_each, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())

    one = results["one_call"]
    assert one["turns"] >= 2 and one["failed"] == 0 and one["p50_ms"] is not None

    stt = {(row["design"], row["concurrency"]): row for row in results["stt"]}
    assert {("shared", 1), ("shared", 2), ("per-call", 2)} <= set(stt)
    assert all(row["utterances"] > 0 and row["wer_pct"] < 30 for row in stt.values())
    # Two models really were loaded for two per-call streams; the shared engine loaded none.
    assert stt[("per-call", 2)]["models_mb"] > 20 and stt[("shared", 2)]["models_mb"] < 20

    for design in ("shared", "per-call"):
        rows = [row for row in results["levels"] if row["design"] == design]
        assert rows, f"no load level ran for {design}"
        assert all(row["turns"] > 0 and row["failed"] == 0 and row["rss_loaded_mb"] > 0 for row in rows), rows

    table = (out / "results.md").read_text()
    assert "one call, voice-to-voice p50" in table and "| per-call | 2 |" in table
    assert (out / "latency_vs_calls.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
