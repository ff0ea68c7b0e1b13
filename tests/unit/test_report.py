"""The post-call report's signature and its delivery (docs/post-call-report.md): the documented verifiers
run as the doc has them, and the sink's answer to every kind of receiver reply."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError

from tests.fakes.report_receiver import ReportReceiver, doc_block, documented_python_verifier
from voicebridge.config.load import render_toml
from voicebridge.config.schema import ReportConfig, Settings
from voicebridge.records.report import ReportSink, encode, signed_headers
from voicebridge.sim.daemon import free_port

SECRET = "s3cret-for-the-tests-only"
PAYLOAD = {"call_sid": "CA-1", "turns": [{"role": "caller", "text": "नमस्ते, hello"}], "context": {}}


def signed(now: float, secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    body = encode(PAYLOAD)
    return signed_headers(secret, body, "CA-1:s:report", now), body


def test_the_signature_is_the_documented_hmac_of_timestamp_dot_body() -> None:
    headers, body = signed(1796601600.7)
    assert headers["X-Voicebridge-Timestamp"] == "1796601600"
    expected = hmac.new(SECRET.encode(), b"1796601600." + body, hashlib.sha256).hexdigest()
    assert headers["X-Voicebridge-Signature"] == f"v1={expected}"
    assert headers["Idempotency-Key"] == "CA-1:s:report" and headers["Content-Type"] == "application/json"
    assert json.loads(body) == PAYLOAD  # non-ASCII text survives the ASCII escaping


def test_the_documented_python_verifier_accepts_a_report_and_refuses_forgeries() -> None:
    verify = documented_python_verifier()
    now = time.time()
    headers, body = signed(now)
    timestamp, signature = headers["X-Voicebridge-Timestamp"], headers["X-Voicebridge-Signature"]
    assert verify(SECRET, timestamp, signature, body)
    assert not verify(SECRET, timestamp, signature, body.replace(b"CA-1", b"CA-2"))  # tampered body
    assert not verify("another-secret-entirely", timestamp, signature, body)
    assert not verify(SECRET, str(int(now) + 1), signature, body)  # the timestamp is signed too
    assert not verify(SECRET, timestamp, signature.removeprefix("v1="), body)
    assert not verify(SECRET, "", signature, body) and not verify(SECRET, "1e9", signature, body)
    stale_headers, stale_body = signed(now - 301)
    stale = stale_headers["X-Voicebridge-Timestamp"], stale_headers["X-Voicebridge-Signature"]
    assert not verify(SECRET, *stale, stale_body)  # validly signed, but too old: a replay
    late_headers, late_body = signed(now - 200)
    assert verify(
        SECRET, late_headers["X-Voicebridge-Timestamp"], late_headers["X-Voicebridge-Signature"], late_body
    )


# Reads cases as JSON lines on stdin, answers one "true"/"false" line each.
NODE_DRIVER = """
const lines = require("node:fs").readFileSync(0, "utf8").trim().split("\\n");
for (const line of lines) {
  const c = JSON.parse(line);
  console.log(String(verify(c.secret, c.timestamp, c.signature, Buffer.from(c.body, "base64"))));
}
"""


def test_the_documented_node_verifier_accepts_a_report_and_refuses_forgeries(tmp_path: Path) -> None:
    import base64

    now = time.time()
    headers, body = signed(now)
    stale_headers, stale_body = signed(now - 301)

    def case(secret: str, head: dict[str, str], raw: bytes) -> str:
        timestamp, signature = head["X-Voicebridge-Timestamp"], head["X-Voicebridge-Signature"]
        return json.dumps(
            {
                "secret": secret,
                "timestamp": timestamp,
                "signature": signature,
                "body": base64.b64encode(raw).decode(),
            }
        )

    cases = [
        case(SECRET, headers, body),
        case(SECRET, headers, body.replace(b"CA-1", b"CA-2")),
        case("another-secret-entirely", headers, body),
        case(SECRET, stale_headers, stale_body),
    ]
    script = tmp_path / "verify.js"
    script.write_text(doc_block("node") + NODE_DRIVER)
    # node is installed where this suite runs; the doc's Node code is checked, not skipped.
    done = subprocess.run(
        ["node", str(script)], input="\n".join(cases), capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["true", "false", "false", "false"]


def test_report_config_wants_an_http_url_and_a_secret() -> None:
    assert ReportConfig().url == ""  # off by default: no secret needed
    ReportConfig(url="https://crm.example.com/r", secret=SECRET)
    with pytest.raises(ValidationError, match="http"):
        ReportConfig(url="ftp://crm.example.com/r", secret=SECRET)
    with pytest.raises(ValidationError, match="credentials"):
        ReportConfig(url="https://user:pw@crm.example.com/r", secret=SECRET)
    with pytest.raises(ValidationError, match=r"report\.secret"):
        ReportConfig(url="https://crm.example.com/r")
    with pytest.raises(ValidationError, match=r"report\.secret"):
        ReportConfig(url="https://crm.example.com/r", secret="short")


def test_config_show_redacts_the_report_secret() -> None:
    settings = Settings(report=ReportConfig(url="https://crm.example.com/r", secret=SECRET))
    shown = render_toml(settings)
    assert SECRET not in shown and "https://crm.example.com/r" in shown


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (400, "parked"),
        (422, "parked"),
        (401, "retry"),
        (403, "retry"),
        (404, "retry"),
        (408, "retry"),
        (413, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (307, "retry"),  # a redirect is not followed: the signed report goes where the config says
    ],
)
async def test_the_sink_answers_the_outbox_per_receiver_status(status: int, result: str) -> None:
    async with ReportReceiver(statuses=[status]) as receiver:
        sink = ReportSink(ReportConfig(url=receiver.url, secret=SECRET))
        await sink.start()
        try:
            answer = await sink.deliver("report", PAYLOAD, "CA-1:s:report")
        finally:
            await sink.close()
    assert answer[0] == result and (result == "delivered" or str(status) in answer[1])
    (seen,) = receiver.received
    assert seen.headers["Idempotency-Key"] == "CA-1:s:report"
    verify = documented_python_verifier()
    assert verify(
        SECRET, seen.headers["X-Voicebridge-Timestamp"], seen.headers["X-Voicebridge-Signature"], seen.body
    )


async def test_a_receiver_that_hangs_or_is_not_there_is_retried() -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    app = web.Application()
    app.router.add_post("/report", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sink = ReportSink(ReportConfig(url=f"http://127.0.0.1:{port}/report", secret=SECRET, timeout_s=0.3))
    gone = ReportSink(ReportConfig(url=f"http://127.0.0.1:{free_port()}/report", secret=SECRET))
    await sink.start()
    await gone.start()
    try:
        assert await sink.deliver("report", PAYLOAD, "k") == ("retry", "timed out after 0.3s")
        assert await gone.deliver("report", PAYLOAD, "k") == ("retry", "connection refused")
        # A key aiohttp will not put in a header can never be sent: parked, not retried forever.
        assert (await sink.deliver("report", PAYLOAD, "bad\r\nkey"))[0] == "parked"
    finally:
        await sink.close()
        await gone.close()
        await runner.cleanup()
