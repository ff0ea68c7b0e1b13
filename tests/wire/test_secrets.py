"""Every secret set to a marker, a call run through every authenticated door at DEBUG logging: no output,
log line, document or error message contains any marker."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.node_api import FakeNodeApi
from tests.fakes.report_receiver import ReportReceiver, documented_python_verifier
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import start_daemon

pytestmark = pytest.mark.e2e

SECRETS = {
    ("exotel", "webhook_password"): "MARKER-exotel-hook-password-3",
    ("exotel", "webhook_token"): "MARKER-exotel-hook-token-4",
    ("twilio", "auth_token"): "MARKER-twilio-auth-token-5",
    ("tts", "azure_key"): "MARKER-azure-key-6",
    ("backend", "api_key"): "MARKER-backend-api-key-7",
    ("server", "stream_secret"): "MARKER-stream-secret-8",
    ("management", "token"): "MARKER-management-token-9",
    ("report", "secret"): "MARKER-report-secret-10",
}


def cli(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "voicebridge", *args], capture_output=True, text=True, env=env, timeout=120
    )
    return result.stdout + result.stderr


async def test_no_secret_reaches_any_output(tmp_path: Path, speak: Any) -> None:
    outputs: dict[str, str] = {}
    async with FakeNodeApi(api_key=SECRETS[("backend", "api_key")]) as backend, ReportReceiver() as reports:
        overrides: dict[str, dict[str, Any]] = {
            "logging": {"level": "DEBUG"},
            "prompts": {"greeting": "Hello."},
        }
        for (section, key), marker in SECRETS.items():
            overrides.setdefault(section, {})[key] = marker
        overrides["exotel"] |= {"webhook_auth": "basic", "webhook_username": "exotel"}
        overrides["twilio"] |= {"webhook_auth": "signature"}
        overrides["backend"] |= {"kind": "node", "url": backend.url}
        overrides["report"] |= {"url": reports.url}
        daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
        try:
            password = SECRETS[("exotel", "webhook_password")]
            good = "Basic " + base64.b64encode(f"exotel:{password}".encode()).decode()
            bad = "Basic " + base64.b64encode(b"exotel:wrong").decode()
            form = {"CallSid": "CA-secrets", "From": "+919800000001", "To": "+918000000002"}
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"{daemon.http}/webhooks/exotel/incoming",
                    data=form,
                    headers={"Authorization": good},
                ) as response:
                    url = (await response.json())["url"]
                for path, headers in (
                    ("/webhooks/exotel/incoming", {"Authorization": bad}),
                    ("/webhooks/twilio/incoming", {"X-Twilio-Signature": "forged"}),
                    (
                        "/api/calls/active",
                        {"X-Forwarded-For": "198.51.100.1", "Authorization": "Bearer nope"},
                    ),
                ):
                    async with session.post(f"{daemon.http}{path}", data=form, headers=headers) as response:
                        outputs[f"refused {path}"] = await response.text()
            async with SimulatedCaller(url, call_sid="CA-secrets") as caller:
                await caller.listen_until_mark(timeout=20)
                result = await caller.turn(speak("What time do you open?", 8000), timeout=30)
                assert result.mark_at is not None, daemon.log()
                await caller.stop()
            assert backend.seen("/messages"), "the call did not reach the backend"
            for _ in range(100):  # the report is signed with its secret: wait for it to be in play
                if reports.delivered():
                    break
                await asyncio.sleep(0.1)
            async with aiohttp.ClientSession() as session:
                for path in ("/health", "/metrics", "/api/calls/active", "/api/calls/CA-secrets/hangup"):
                    method = session.post if path.endswith("hangup") else session.get
                    async with method(f"{daemon.http}{path}") as response:
                        outputs[path] = await response.text()
            config_path = tmp_path / f"daemon-{daemon.port}.toml"
            outputs["config show"] = cli("config", "show", "--config", str(config_path))
            outputs["doctor"] = cli("doctor", "--config", str(config_path), "--json")
            outputs["calls list"] = cli("calls", "list", "--json", "--socket", str(daemon.control_socket))
            outputs["calls show"] = cli("calls", "show", "CA-secrets", "--socket", str(daemon.control_socket))
        finally:
            daemon.terminate()
        outputs["daemon log"] = daemon.log()
    # The secrets were really in play: the backend got its key, config show knows the keys exist.
    assert backend.seen("/messages")[0].headers["X-Api-Key"] == SECRETS[("backend", "api_key")]
    assert "azure_key" in outputs["config show"] and json.loads(outputs["calls list"]) is not None
    assert "DEBUG" in outputs["daemon log"]
    report = reports.delivered()[0]
    timestamp, signature = (
        report.headers["X-Voicebridge-Timestamp"],
        report.headers["X-Voicebridge-Signature"],
    )
    assert documented_python_verifier()(SECRETS[("report", "secret")], timestamp, signature, report.body)
    for name, text in outputs.items():
        for marker in SECRETS.values():
            assert marker not in text, f"{marker} leaked into {name}"
