"""A call's context over the wire (issue 16, item 1): an Exotel call whose stream URL carries
`?order_id=A17&lang=hi` reaches the node backend with `context.order_id == "A17"` on its message,
`calls show` lists the context while the call is live and after it ended, and the records and the signed
post-call report carry it.

Real processes: `voicebridge serve`, the CLI, a simulated Exotel caller; the business API is the
in-process fake (tests/fakes/node_api.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.node_api import FakeNodeApi
from tests.fakes.report_receiver import ReportReceiver, documented_python_verifier
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon

pytestmark = pytest.mark.e2e

CALL_SID = "CA-context-1"
REPORT_SECRET = "context-report-secret-0123"


def calls_show(daemon: DaemonProcess, call_sid: str) -> dict[str, Any]:
    """`voicebridge calls show <sid>` as the operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voicebridge",
            "calls",
            "show",
            call_sid,
            "--socket",
            str(daemon.control_socket),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


async def metric(http: str, pattern: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as response:
        found = re.search(pattern + r" ([0-9.e+-]+)", await response.text())
    return float(found.group(1)) if found else 0.0


def records_of(backend: FakeNodeApi, call_sid: str) -> dict[str, dict[str, Any]]:
    """The call's delivered records by their key's last part (event:started, event:ended, conversation)."""
    return {
        key.split(":", 2)[2]: body for key, body in backend.records.items() if key.startswith(f"{call_sid}:")
    }


async def test_an_exotel_url_query_becomes_the_call_context_end_to_end(
    tmp_path: Path, speak: Callable[[str, int], bytes]
) -> None:
    async with FakeNodeApi(api_key="k") as backend, ReportReceiver() as receiver:
        overrides: dict[str, dict[str, Any]] = {
            "prompts": {"greeting": "Hello."},
            "backend": {"kind": "node", "url": backend.url, "api_key": "k"},
            "report": {"url": receiver.url, "secret": REPORT_SECRET},
            "outbox": {"retry_base_s": 0.2, "retry_cap_s": 1.0},
        }
        # start_daemon polls synchronously: in a thread, so this loop keeps serving the fake.
        daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
        try:
            # The Voicebot URL's custom fields, a credential-looking one that must not become context, and
            # a start repeating one of them (Exotel's copy) plus one of its own.
            query = "order_id=A17&lang=hi&token=s3cr3t-marker"
            caller = SimulatedCaller(f"{daemon.ws}/ws/stream/{CALL_SID}?{query}", call_sid=CALL_SID)
            caller.wire.custom_parameters = {"lang": "hi", "campaign": "diwali"}  # type: ignore[attr-defined]
            async with caller:
                await caller.listen_until_mark(timeout=30)
                live = await asyncio.to_thread(calls_show, daemon, CALL_SID)
                assert live["call_sid"] == CALL_SID and live["state"] != "ended"
                expected = {"order_id": "A17", "lang": "hi", "campaign": "diwali"}
                assert live["context"] == expected
                result = await caller.turn(speak("What time do you open on Sunday?", 8000), timeout=30)
                assert result.mark_at is not None, daemon.log()
                await caller.stop()

            (message,) = backend.seen("/messages")
            assert message.path == f"/v1/calls/{CALL_SID}/messages"
            assert message.body["context"]["order_id"] == "A17"
            assert message.body["context"] == expected

            deadline = time.monotonic() + 30
            while len(records_of(backend, CALL_SID)) < 4:
                assert time.monotonic() < deadline, (backend.records.keys(), daemon.log())
                await asyncio.sleep(0.2)
            records = records_of(backend, CALL_SID)
            assert records["event:started"]["context"] == expected
            assert records["event:ended"]["context"] == expected
            assert records["conversation"]["context"] == expected

            deadline = time.monotonic() + 30
            while not receiver.delivered():
                assert time.monotonic() < deadline, daemon.log()
                await asyncio.sleep(0.2)
            (report,) = receiver.delivered()
            verify = documented_python_verifier()
            assert verify(
                REPORT_SECRET,
                report.headers["X-Voicebridge-Timestamp"],
                report.headers["X-Voicebridge-Signature"],
                report.body,
            )
            payload = json.loads(report.body)
            assert payload["call_sid"] == CALL_SID and payload["context"] == expected

            ended = await asyncio.to_thread(calls_show, daemon, CALL_SID)
            assert ended["state"] == "ended" and ended["context"] == expected
            # The credential-looking parameter: counted, named in the log, its value nowhere.
            assert await metric(daemon.http, r'voicebridge_context_dropped_total\{reason="reserved"\}') == 1
            log = daemon.log()
            assert '"token" (reserved)' in log and "s3cr3t-marker" not in log
            assert 'context={"campaign": "diwali", "lang": "hi", "order_id": "A17"}' in log
        finally:
            daemon.terminate()


async def test_an_exotel_dynamic_url_hands_its_own_query_on_as_the_call_context(tmp_path: Path) -> None:
    """A dynamic Voicebot URL (`…/webhooks/exotel/incoming?order_id=A17&lang=hi`): Exotel's GET adds its
    call fields to that query; the stream URL we answer carries the business's parameters and none of
    Exotel's, so the call's context is the same as with a static URL."""
    daemon = await asyncio.to_thread(start_daemon, tmp_path, {"prompts": {"greeting": "Hello."}})
    try:
        query = {
            "CallSid": "CA-dynamic-1",
            "CallFrom": "09800000001",
            "CallTo": "08047491899",
            "Direction": "incoming",
            "CustomField": "exotel-own",
            "order_id": "A17",
            "lang": "hi",
            "bad key": "x",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{daemon.http}/webhooks/exotel/incoming", params=query) as response,
        ):
            assert response.status == 200, await response.text()
            url = (await response.json())["url"]
        assert "order_id=A17" in url and "lang=hi" in url
        assert "CallFrom" not in url and "CustomField" not in url and "bad" not in url
        async with SimulatedCaller(url, call_sid="CA-dynamic-1") as caller:
            await caller.listen_until_mark(timeout=30)
            live = await asyncio.to_thread(calls_show, daemon, "CA-dynamic-1")
            assert live["context"] == {"order_id": "A17", "lang": "hi"}
            await caller.stop()
        assert await metric(daemon.http, r'voicebridge_context_dropped_total\{reason="bad_key"\}') == 1
        log = daemon.log()
        assert '"bad key" (bad_key)' in log and "Traceback" not in log
    finally:
        daemon.terminate()
