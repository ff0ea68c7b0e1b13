"""Campaigns in a real daemon process, driven by the real CLI: a campaign started over the control
socket survives SIGKILL and is running again after a restart on the same state directory; hostile
control lines and API bodies are counted refusals. No provider is set up to dial (no caller id), so
nothing is dialled and no number is given up on. (A campaign that dials: test_campaign_calls_e2e.py.)"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.wire.test_operator_cli import no_traceback, voicebridge
from voicebridge.sim.daemon import DaemonProcess, start_daemon

pytestmark = pytest.mark.e2e

# Open all day in UTC, so the test does not depend on when it runs.
HOURS = ["--hours", "00:00-24:00", "--tz", "UTC"]


def control(daemon: DaemonProcess, line: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.control_socket))
        sock.sendall(line + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return dict(json.loads(reply))


def status(daemon: DaemonProcess, campaign: int) -> dict[str, Any]:
    result = voicebridge(
        "campaign", "status", str(campaign), "--json", "--socket", str(daemon.control_socket)
    )
    no_traceback(result)
    assert result.returncode == 0, result.stderr + daemon.log()
    return dict(json.loads(result.stdout))


def test_a_campaign_survives_sigkill_and_nothing_is_dialled_without_a_caller_id(tmp_path: Path) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text("number,name\n+919800000001,Asha\n+919800000002,Ravi\n+919800000002,dup\nnope,x\n")
    first = start_daemon(tmp_path / "d", {})
    try:
        run = voicebridge(
            "campaign",
            "run",
            str(listed),
            "--concurrency",
            "2",
            *HOURS,
            "--socket",
            str(first.control_socket),
        )
        no_traceback(run)
        assert run.returncode == 0, run.stderr + first.log()
        assert "campaign 1 started: 2 number(s), 1 duplicate(s) left out, 1 bad row(s)" in run.stdout
        assert "line 5: number is not E.164" in run.stderr
        time.sleep(1.5)  # a few runner passes
        before = status(first, 1)
        assert (before["state"], before["dialled"], before["remaining"]) == ("running", 0, 2)
        hostile = [
            b'{"version": 1, "op": "campaign_run", "path": "relative.csv"}',
            b'{"version": 1, "op": "campaign_run", "path": "/etc/shadow\\u0000"}',
            b'{"version": 1, "op": "campaign_pause", "campaign": "1e9"}',
            b'{"version": 1, "op": "campaign_status", "campaign": 99999}',
            b'{"version": 1, "op": "campaign_run", "path": "/x.csv", "concurrency": 1.5}',
        ]
        codes = [control(first, line).get("code") for line in hostile]
        assert codes == ["bad_request", "bad_request", "bad_request", "unknown_campaign", "bad_request"]
        request = urllib.request.Request(
            f"{first.http}/api/campaigns",
            data=b'{"csv": "number\\n+919800000003\\n", "max_attempts": 0}',
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        metrics = urllib.request.urlopen(f"{first.http}/metrics", timeout=10).read().decode()
        assert 'voicebridge_control_refusals_total{code="bad_request"} 4.0' in metrics
    finally:
        first.process.kill()  # SIGKILL: no drain, no cleanup
        first.process.wait(timeout=10)
    second = start_daemon(tmp_path / "d", {})
    try:
        after = status(second, 1)
        assert (after["state"], after["numbers"], after["dialled"]) == ("running", 2, 0)
        paused = voicebridge("campaign", "pause", "1", "--socket", str(second.control_socket))
        assert paused.stdout.strip() == "campaign 1 paused", paused.stderr
        assert "Traceback" not in second.log()
    finally:
        assert second.terminate() == 0
