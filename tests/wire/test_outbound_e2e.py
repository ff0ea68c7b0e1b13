"""Outbound calls over the wire (issue 17, item 1): a real daemon, the local fakes of Exotel's and
Twilio's REST APIs (voicebridge/sim/provider_rest.py) and the in-process node backend fake.

`voicebridge dial +919800000001 --context order_id=A17` places a call through the Exotel fake, which
streams back to the daemon with the URL it was given and plays a person answering ("Hello? Yes,
speaking.", judged human by the answering-machine detector before the bot greets) and two turns: the
backend sees both turns as an outbound call with the dial's context,
and the records say `direction: "outbound"`. A machine's greeting and beep get the voicemail message and
the outcome `machine`. POST /api/calls places a Twilio call through to its stream's
start. Hostile dial requests are counted 4xx; a forged or reused dial token is refused at the upgrade."""

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
import numpy as np
import pytest

from tests.fakes.node_api import FakeNodeApi
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.sim.provider_rest import Answer, FakeProviderRest

pytestmark = pytest.mark.e2e

MANAGEMENT = "management-token-17"
WEBHOOK_TOKEN = "exotel-webhook-token-17"
TWILIO_ACCOUNT = "AC" + "1" * 32
EXOPHONE = "+918047491899"
VOICEMAIL = "This is Sunrise Clinic. Please call us back about your appointment."


def dial_cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`voicebridge dial …` as the operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    command = [sys.executable, "-m", "voicebridge", "dial", *args, "--socket", str(daemon.control_socket)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


async def metric(http: str, pattern: str) -> float:
    headers = {"Authorization": f"Bearer {MANAGEMENT}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{http}/metrics", headers=headers) as response,
    ):
        found = re.search(pattern + r" ([0-9.e+-]+)", await response.text())
    return float(found.group(1)) if found else 0.0


def records_of(backend: FakeNodeApi, call_sid: str) -> dict[str, dict[str, Any]]:
    return {
        key.split(":", 2)[2]: body for key, body in backend.records.items() if key.startswith(f"{call_sid}:")
    }


async def wait_records(backend: FakeNodeApi, call_sid: str, kinds: set[str], daemon: DaemonProcess) -> None:
    deadline = time.monotonic() + 30
    while not kinds <= set(records_of(backend, call_sid)):
        assert time.monotonic() < deadline, (list(backend.records), daemon.log()[-3000:])
        await asyncio.sleep(0.2)


async def post_call(daemon: DaemonProcess, body: bytes | str, token: str = MANAGEMENT) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{daemon.http}/api/calls", data=body, headers=headers) as response,
    ):
        return response.status, await response.text()


async def upgrade_status(url: str) -> int:
    """The HTTP status a stream upgrade to `url` gets (101 when it is accepted)."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status


def machine_greeting(speak: Callable[[str, int], bytes]) -> bytes:
    """An answering machine: its greeting (about six seconds, no pause a person would leave for a reply),
    a 1 kHz beep of half a second, then the silence it records."""
    greeting = speak(
        "Hi, you have reached the Sharma family. We cannot take your call right now. "
        "Please leave a message after the tone.",
        8000,
    )
    t = np.arange(4000) / 8000
    beep = (np.sin(2 * np.pi * 1000 * t) * 12000).astype("<i2").tobytes()
    return greeting + bytes(1600) + beep


async def test_dial_places_a_two_turn_outbound_call_and_hostile_dials_are_refused(
    tmp_path: Path, speak: Callable[[str, int], bytes], transcribe: Callable[[bytes, int], str]
) -> None:
    hello, second = speak("Hello? Yes, speaking.", 8000), speak("Yes, I want to confirm my order.", 8000)
    third = speak("Thank you, that is all.", 8000)
    async with (
        FakeNodeApi(api_key="k") as backend,
        FakeProviderRest("exotel", Answer(pick_up=hello, turns=(second, third))) as exotel,
        FakeProviderRest("twilio", Answer(pick_up=hello, turns=(second,))) as twilio,
    ):
        overrides: dict[str, dict[str, Any]] = {
            "prompts": {
                "greeting": "Thanks for calling.",
                "outbound_greeting": "Hello, this is Sunrise Clinic.",
                "voicemail_message": VOICEMAIL,
            },
            "backend": {"kind": "node", "url": backend.url, "api_key": "k"},
            "outbox": {"retry_base_s": 0.2, "retry_cap_s": 1.0},
            "management": {"token": MANAGEMENT},
            "exotel": {
                "webhook_auth": "token",
                "webhook_token": WEBHOOK_TOKEN,
                "account_sid": "acme17",
                "api_key": "exo-key",
                "api_token": "exo-secret-MARKER",
                "api_base": exotel.url,
                "caller_id": EXOPHONE,
            },
            "twilio": {
                "account_sid": TWILIO_ACCOUNT,
                "auth_token": "twilio-secret-MARKER",
                "api_base": twilio.url,
                "caller_id": "+14155550199",
            },
        }
        daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
        try:
            # --- Exotel, from the CLI: two turns, the context and direction everywhere --------------------
            dialled = await asyncio.to_thread(dial_cli, daemon, "+919800000001", "--context", "order_id=A17")
            assert dialled.returncode == 0 and "Traceback" not in dialled.stderr, dialled.stderr
            call_sid = dialled.stdout.split()[0]
            assert call_sid in exotel.calls and "(exotel)" in dialled.stdout
            (form,) = exotel.requests
            assert form["From"] == "+919800000001" and form["CallerId"] == EXOPHONE
            assert form["StreamType"] == "bidirectional" and json.loads(form["CustomField"]) == {
                "order_id": "A17"
            }
            assert form["StreamUrl"].startswith(f"{daemon.ws}/ws/stream/DL")
            call = await exotel.wait(call_sid, timeout=120)
            assert not call.error and call.greeted, (call.error, daemon.log()[-3000:])
            assert [turn.mark_at is not None for turn in call.turns] == [True, True], daemon.log()[-3000:]
            assert exotel.status_answers == [200]  # the status callback, with its webhook token, was taken

            messages = backend.seen("/messages")
            assert [m.path for m in messages] == [f"/v1/calls/{call_sid}/messages"] * 2
            for message in messages:
                assert message.body["direction"] == "outbound"
                assert message.body["context"] == {"order_id": "A17"}
                assert (message.body["from"], message.body["to"]) == (EXOPHONE, "+919800000001")
            await wait_records(
                backend, call_sid, {"event:started", "event:ended", "cost", "conversation"}, daemon
            )
            records = records_of(backend, call_sid)
            for kind in ("event:started", "event:ended", "cost", "conversation"):
                assert records[kind]["direction"] == "outbound", (kind, records[kind])
            assert records["conversation"]["context"] == {"order_id": "A17"}
            assert records["conversation"]["turns"][0]["text"] == "Hello, this is Sunrise Clinic."
            # The person's "Hello? Yes, speaking." was judged by the answering-machine detector, not answered.
            assert records["event:ended"]["answered_by"] == "human"
            assert "speaking" not in " ".join(m.body["text"].lower() for m in messages)

            # --- a machine answers: its greeting, a beep, then the voicemail message; outcome machine ------
            exotel.script("+919800000009", Answer(pick_up=machine_greeting(speak), machine_records_s=30))
            status, text = await post_call(daemon, json.dumps({"to": "+919800000009"}))
            assert status == 201, text
            machine_sid = json.loads(text)["call_sid"]
            machine = await exotel.wait(machine_sid, timeout=90)
            assert not machine.error, (machine.error, daemon.log()[-3000:])
            await wait_records(backend, machine_sid, {"event:ended", "conversation"}, daemon)
            machine_records = records_of(backend, machine_sid)
            assert machine_records["event:ended"]["outcome"] == "machine"
            assert machine_records["event:ended"]["answered_by"] == "machine"
            bot_lines = [t["text"] for t in machine_records["conversation"]["turns"] if t["role"] == "bot"]
            assert bot_lines == [VOICEMAIL]
            assert len(backend.seen("/messages")) == 2  # nothing of the machine's went to the backend
            # What the machine recorded: the message (its timing after the beep: tests/engine).
            assert "call us back" in transcribe(machine.heard, 8000).lower()

            # --- a reused or forged dial token is refused at the upgrade ---------------------------------
            used = form["StreamUrl"]
            assert await upgrade_status(used) in (401, 403)
            forged = re.sub(r"\.[0-9a-f]{32}$", "." + "0" * 32, used)
            assert forged != used and await upgrade_status(forged) in (401, 403)
            assert (
                await metric(
                    daemon.http,
                    r'voicebridge_auth_failures_total\{reason="stream token already used",surface="stream"\}',
                )
                >= 1
            )

            # --- Twilio, from the management API: a person answers, one turn, as an outbound call ----------
            body = {"to": "+14155550100", "provider": "twilio", "context": {"order_id": "T1"}}
            status, text = await post_call(daemon, json.dumps(body))
            assert status == 201, text
            created = json.loads(text)
            assert created["provider"] == "twilio" and created["call_sid"] in twilio.calls
            twilio_form = twilio.requests[0]
            assert (twilio_form["To"], twilio_form["From"]) == ("+14155550100", "+14155550199")
            assert '<Parameter name="order_id" value="T1"/>' in twilio_form["Twiml"]
            twilio_call = await twilio.wait(created["call_sid"], timeout=60)
            assert not twilio_call.error and twilio_call.greeted, (twilio_call.error, daemon.log()[-3000:])
            assert [turn.mark_at is not None for turn in twilio_call.turns] == [True], daemon.log()[-3000:]
            await wait_records(backend, created["call_sid"], {"event:started", "event:ended"}, daemon)
            twilio_records = records_of(backend, created["call_sid"])
            started = twilio_records["event:started"]
            assert started["direction"] == "outbound" and started["context"] == {"order_id": "T1"}
            assert twilio_records["event:ended"]["answered_by"] == "human"
            (twilio_message,) = [m for m in backend.seen("/messages") if created["call_sid"] in m.path]
            assert twilio_message.body["context"] == {"order_id": "T1"}

            # --- a busy number: no stream, the status callback (with its webhook token) is taken -----------
            exotel.script("+919800000007", Answer(outcome="busy", ring_s=0.1))
            status, text = await post_call(daemon, json.dumps({"to": "+919800000007"}))
            assert status == 201, text
            busy = await exotel.wait(json.loads(text)["call_sid"], timeout=30)
            assert busy.status == "busy" and busy.close_code is None and not busy.turns
            assert exotel.status_answers == [200, 200, 200]

            # --- hostile dial requests: counted 4xx, never a 500 -----------------------------------------
            refusals = {
                "bad_number": json.dumps({"to": "98000 00001"}),
                "not_json": "to=+919800000001",
                "huge": json.dumps({"to": "+919800000001", "context": {"x": "y" * (3 << 20)}}),
                "not_object": "[1, 2]",
                "bad_context": json.dumps({"to": "+919800000001", "context": {"bad key!": "v"}}),
                "unknown_field": json.dumps({"to": "+919800000001", "Url": "http://evil.example"}),
            }
            for name, hostile in refusals.items():
                status, text = await post_call(daemon, hostile)
                assert 400 <= status < 500, (name, status, text)
            assert (
                await metric(
                    daemon.http,
                    r'voicebridge_http_rejections_total\{reason="dial_bad_number",surface="management"\}',
                )
                == 1
            )
            assert (await post_call(daemon, json.dumps({"to": "+919800000002"}), token="wrong"))[0] == 401
            assert (
                len(exotel.requests) == 3 and len(twilio.requests) == 1
            )  # nothing hostile reached a provider

            log = daemon.log()
            assert "Traceback" not in log and "MARKER" not in log and WEBHOOK_TOKEN not in log
        finally:
            daemon.terminate()


async def test_a_call_dialled_into_an_exotel_flow_streams_as_its_dial(
    tmp_path: Path, speak: Callable[[str, int], bytes]
) -> None:
    """outbound_mode = "flow": Exotel runs the flow, whose Voicebot applet asks our dynamic URL for its
    stream URL with the CallSid our create request got back; the answer is the dial's own URL, so the
    stream is the dialled call (its context, direction and outbound greeting), not an inbound one."""
    hello, question = speak("Hello? Yes, speaking.", 8000), speak("Is my order ready?", 8000)
    async with (
        FakeNodeApi(api_key="k") as backend,
        FakeProviderRest("exotel", Answer(pick_up=hello, turns=(question,))) as exotel,
    ):
        overrides: dict[str, dict[str, Any]] = {
            "prompts": {"outbound_greeting": "Hello, this is Sunrise Clinic."},
            "backend": {"kind": "node", "url": backend.url, "api_key": "k"},
            "management": {"token": MANAGEMENT},
            "exotel": {
                "account_sid": "acme17",
                "api_key": "exo-key",
                "api_token": "exo-secret",
                "api_base": exotel.url,
                "caller_id": EXOPHONE,
                "outbound_mode": "flow",
                "outbound_flow_url": "http://my.exotel.com/acme17/exoml/start_voice/4242",
            },
        }
        daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
        try:
            exotel.flow_voicebot_url = f"{daemon.http}/webhooks/exotel/incoming"
            body = {"to": "+919800000005", "context": {"order_id": "F5"}}
            status, text = await post_call(daemon, json.dumps(body))
            assert status == 201, text
            call_sid = json.loads(text)["call_sid"]
            (form,) = exotel.requests
            assert form["Url"].endswith("/exoml/start_voice/4242") and "StreamUrl" not in form
            call = await exotel.wait(call_sid, timeout=90)
            assert not call.error and call.greeted, (call.error, daemon.log()[-3000:])
            (message,) = backend.seen("/messages")
            assert message.body["direction"] == "outbound" and message.body["context"] == {"order_id": "F5"}
            await wait_records(backend, call_sid, {"event:ended", "conversation"}, daemon)
            conversation = records_of(backend, call_sid)["conversation"]
            assert conversation["turns"][0]["text"] == "Hello, this is Sunrise Clinic."
        finally:
            daemon.terminate()


async def test_twilio_outbound_status_callbacks_are_taken_signed_and_refused_forged(tmp_path: Path) -> None:
    """With `twilio.webhook_auth = "signature"`, the status callback of a dialled call carries Twilio's
    X-Twilio-Signature (signed by the fake as Twilio documents it) and is taken; the same callback with a
    forged signature, or none, is a counted 401 and ends nothing."""
    auth_token = "twilio-auth-token-signed-17"
    async with FakeProviderRest(
        "twilio", Answer(outcome="busy", ring_s=0.1), auth_token=auth_token
    ) as twilio:
        overrides: dict[str, dict[str, Any]] = {
            "management": {"token": MANAGEMENT},
            "twilio": {
                "enabled": True,
                "account_sid": TWILIO_ACCOUNT,
                "auth_token": auth_token,
                "api_base": twilio.url,
                "caller_id": "+14155550199",
                "webhook_auth": "signature",
            },
            "outbound": {"default_provider": "twilio"},
        }
        daemon = await asyncio.to_thread(start_daemon, tmp_path, overrides)
        try:
            status, text = await post_call(daemon, json.dumps({"to": "+14155550123"}))
            assert status == 201, text
            busy = await twilio.wait(json.loads(text)["call_sid"], timeout=30)
            assert busy.status == "busy" and twilio.status_answers == [200], daemon.log()[-3000:]
            target = twilio.requests[0]["StatusCallback"]
            fields = {"CallSid": busy.call_sid, "CallStatus": "completed", "To": "+14155550123"}
            async with aiohttp.ClientSession() as session:
                for headers in ({"X-Twilio-Signature": "Zm9yZ2Vk"}, {}):
                    async with session.post(target, data=fields, headers=headers) as response:
                        assert response.status == 401, await response.text()
            headers = {"Authorization": f"Bearer {MANAGEMENT}"}
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{daemon.http}/metrics", headers=headers) as response,
            ):
                exposition = await response.text()
            pattern = r'voicebridge_auth_failures_total\{reason="[^"]*",surface="twilio"\} ([0-9.]+)'
            assert sum(float(count) for count in re.findall(pattern, exposition)) == 2, exposition
            assert "Traceback" not in daemon.log()
        finally:
            daemon.terminate()
