"""The HTTP door against real daemons (issue 14: 1, 2, 3, 4, 18, 19, 22, 26).

Two daemons, one per fixture, each shared by the tests that need it:
- `door`: loopback, Exotel `basic`, Twilio `signature`, a management token; the echo backend.
- `exposed`: 0.0.0.0, Exotel `token`, Twilio disabled, no management token; the node backend fake (in a
  thread of its own) recording every path the daemon requests.
Every hostile request must get a 4xx, be counted, and leave no traceback in the daemon's log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import TestServer

from tests.fakes.node_api import FakeNodeApi
from tests.wire.test_auth import EXOTEL_PASSWORD, EXOTEL_USER, LOCKED_DOORS, MANAGEMENT_TOKEN, TWILIO_TOKEN
from voicebridge.config.schema import Settings, TwilioConfig
from voicebridge.doctor.checks import check_authentication
from voicebridge.server.logs import JsonFormatter, MalformedRequestLog, TextFormatter
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.telephony.events import Start
from voicebridge.telephony.providers import TelephonyControl
from voicebridge.telephony.twilio import twilio_signature

pytestmark = pytest.mark.e2e

EXOTEL_TOKEN = "exotel-door-query-token-4"
NODE_KEY = "node-door-key-5"
FORM = "application/x-www-form-urlencoded"


def basic() -> str:
    return "Basic " + base64.b64encode(f"{EXOTEL_USER}:{EXOTEL_PASSWORD}".encode()).decode()


BEARER = {"Authorization": f"Bearer {MANAGEMENT_TOKEN}"}


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = start_daemon(tmp_path_factory.mktemp("door"), LOCKED_DOORS)
    yield process
    process.terminate()


class ThreadedNodeApi:
    """The node backend fake on an event loop of its own, so a module-scoped daemon can use it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.fake = FakeNodeApi(api_key=NODE_KEY)

    def __enter__(self) -> FakeNodeApi:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.__aenter__(), self.loop).result(30)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.__aexit__(None, None, None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def node_api() -> Iterator[FakeNodeApi]:
    with ThreadedNodeApi() as fake:
        yield fake


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory, node_api: FakeNodeApi) -> Iterator[DaemonProcess]:
    process = start_daemon(
        tmp_path_factory.mktemp("exposed"),
        {
            "server": {"host": "0.0.0.0"},
            "prompts": {"greeting": "Hello."},
            "exotel": {"webhook_auth": "token", "webhook_token": EXOTEL_TOKEN},
            "twilio": {"enabled": False},
            "backend": {"kind": "node", "url": node_api.url, "api_key": NODE_KEY},
            "outbox": {"retry_base_s": 0.2, "retry_cap_s": 1.0},
        },
    )
    yield process
    process.terminate()


async def request(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    data: Any = None,
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, data=data, allow_redirects=False) as response,
    ):
        return response.status, await response.text()


async def raw_request(port: int, request_bytes: bytes) -> int:
    """Send bytes no HTTP client would (raw header bytes); return the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 60)
        return int(status_line.split()[1])
    finally:
        writer.close()


async def metric_lines(daemon: DaemonProcess, name: str) -> dict[str, float]:
    status, text = await request("GET", f"{daemon.http}/metrics", BEARER)
    assert status == 200, text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


async def eventually(probe: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Poll `probe` until it holds or `timeout` passes (no timing is asserted: it only bounds a hang)."""
    for _ in range(int(timeout / 0.2)):
        if await probe():
            return True
        await asyncio.sleep(0.2)
    return await probe()


def no_traceback(daemon: DaemonProcess) -> None:
    log = daemon.log()
    assert "Traceback" not in log, log[-4000:]


async def exotel_stream_url(daemon: DaemonProcess, call_sid: str, **form: str) -> str:
    status, body = await request(
        "POST",
        f"{daemon.http}/webhooks/exotel/incoming",
        {"Authorization": basic()},
        {"CallSid": call_sid, "From": "+919800000001", "To": "+918000000002", **form},
    )
    assert status == 200, body
    return str(json.loads(body)["url"])


# --- unit level --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "formatter", [TextFormatter("%(levelname)s [%(call_sid)s] %(message)s"), JsonFormatter()]
)
def test_log_values_cannot_break_the_line(formatter: logging.Formatter) -> None:
    record = logging.LogRecord(
        "voicebridge.test",
        logging.INFO,
        __file__,
        1,
        "call from %s",
        ("+91\nFORGED\r\x1b[2J\x85\u2028x",),
        None,
    )
    record.call_sid = "CA\n1"
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x85" not in line, line
    assert "\u2028" not in line
    message = json.loads(line)["message"] if isinstance(formatter, JsonFormatter) else line
    assert "\\nFORGED\\r\\x1b[2J\\x85\\u2028x" in message, message


def test_exception_text_and_backslashes_are_escaped_too() -> None:
    # #14 review 9: a traceback's own text kept raw CR and ESC; a literal backslash-n looked like a newline.
    try:
        raise ValueError("bad\r\x1b[2Jvalue\u2028FORGED")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "voicebridge.test", logging.ERROR, __file__, 1, "failed: %s", ("a\\nb",), exc_info
    )
    text = TextFormatter("%(levelname)s %(message)s").format(record)
    assert "\r" not in text and "\x1b" not in text and "\u2028" not in text, text
    assert "bad\\r\\x1b[2Jvalue\\u2028FORGED" in text, text
    assert all(line.startswith("  ") for line in text.splitlines()[1:]), text
    # A literal backslash-n and an escaped newline stay distinguishable.
    newline = logging.LogRecord("voicebridge.test", logging.INFO, __file__, 1, "%s", ("a\nb",), None)
    backslash = logging.LogRecord("voicebridge.test", logging.INFO, __file__, 1, "%s", ("a\\nb",), None)
    for formatter in (TextFormatter("%(message)s"), JsonFormatter()):
        assert formatter.format(newline) != formatter.format(backslash), formatter
    assert TextFormatter("%(message)s").format(backslash) == "a\\\\nb"


def test_two_apps_in_one_process_count_a_malformed_request_once() -> None:
    # #14 review 11: the filter sits on the process-global aiohttp.server logger, one per app.
    counts = [0, 0]
    filters = [MalformedRequestLog(lambda n=n: counts.__setitem__(n, counts[n] + 1)) for n in (0, 1)]
    record = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request",
        None,
        (BadHttpMessage, BadHttpMessage("bad request line"), None),
    )
    assert all(log_filter.filter(record) for log_filter in filters)
    assert sum(counts) == 1 and record.exc_info is None and record.levelno == logging.WARNING, counts


def test_disabled_providers_count_for_nothing_in_open_mode() -> None:
    # Loopback, Exotel open, Twilio disabled with auth: the quick start's open mode, not half of it.
    settings = Settings(twilio={"enabled": False, "webhook_auth": "signature", "auth_token": "t"})
    assert settings.open_mode and not settings.management_api_needs_token
    assert Settings(server={"trusted_proxies": ["127.0.0.1/32"]}).management_api_needs_token
    with_auth = Settings(exotel={"webhook_auth": "token", "webhook_token": "x" * 16})
    assert with_auth.management_api_needs_token
    # doctor says what the daemon will do: /api/* refused until management.token is set.
    check = check_authentication(with_auth)
    assert check.status == "warn" and "management.token" in check.detail, check
    token_set = Settings(exotel=with_auth.exotel.model_dump(), management={"token": "t" * 20})
    assert check_authentication(token_set).status == "pass"


def test_insecure_does_not_open_management_to_loopback() -> None:
    # #14 review 5: the rule used open_mode, which server.insecure makes true: /api/* open to a same-host
    # proxy on a daemon whose providers have webhook auth configured.
    insecure = Settings(
        server={"insecure": True}, exotel={"webhook_auth": "token", "webhook_token": "x" * 16}
    )
    assert not insecure.open_mode and insecure.management_api_needs_token
    assert Settings(server={"insecure": True, "host": "0.0.0.0"}).management_api_needs_token
    assert not Settings(server={"insecure": True}).management_api_needs_token  # quick start, insecure or not


async def test_twilio_rest_urls_are_built_only_from_valid_sids(caplog: pytest.LogCaptureFixture) -> None:
    # #14 review 4: with twilio.account_sid empty, start.account_sid went raw into the REST URL, sent with
    # our auth_token as the Basic password.
    seen: list[str] = []
    credentials: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        credentials.append(request.headers.get("Authorization", ""))
        return web.json_response({"status": "completed"})

    fake_twilio = web.Application()
    fake_twilio.router.add_route("*", "/{tail:.*}", record)
    good = "AC" + "0123456789abcdef" * 2
    async with TestServer(fake_twilio) as server:
        control = TelephonyControl(
            Settings(twilio=TwilioConfig(api_base=str(server.make_url("")), auth_token="rest-token"))
        )
        for account in ("../../evil/x?", "AC123", "AC" + "g" * 32, good + "/x", good + "0", " " + good):
            assert await control.hang_up(Start("twilio", "MZ1", "CA-rest-1", account_sid=account)) is False
        assert seen == [], seen
        assert "account sid" in caplog.text
        assert await control.hang_up(Start("twilio", "MZ1", "CA x/../y?", account_sid=good)) is True
        assert seen == [f"/2010-04-01/Accounts/{good}/Calls/CA%20x%2F..%2Fy%3F.json"], seen
        assert credentials == ["Basic " + base64.b64encode(f"{good}:rest-token".encode()).decode()]


# --- item 1: a disabled provider has no door -----------------------------------------------------------


async def test_disabled_provider_has_no_routes_and_no_streams(exposed: DaemonProcess) -> None:
    form = {"CallSid": "CA-disabled-1", "From": "+15550000001", "To": "+15550000002"}
    status, body = await request("POST", f"{exposed.http}/webhooks/twilio/incoming", data=form)
    assert status == 404, body
    # A token the enabled provider's webhook issued cannot carry a stream shaped like the disabled one's.
    status, body = await request(
        "POST",
        f"{exposed.http}/webhooks/exotel/incoming",
        {"X-Voicebridge-Token": EXOTEL_TOKEN},
        {"CallSid": "CA-disabled-2", "From": "+919800000001", "To": "+918000000002"},
    )
    assert status == 200, body
    url = json.loads(body)["url"].replace("ws://0.0.0.0:", "ws://127.0.0.1:")
    async with SimulatedCaller(url, provider="twilio", call_sid="CA-disabled-2") as caller:
        await asyncio.wait_for(caller.closed.wait(), 30)
        assert caller.close_code == 1008 and not caller.log.frames
    assert "provider twilio is disabled" in exposed.log()


# --- item 2: sids are checked at every entry; paths to the backend stay in their segment -----------------

VALID_SIDS = ["CA-fuzz-1", "a_b-C9", "x" * 64, "0", "b6cfaf0a9b1b4ea8a2b0b2c4a7b0c3a1"]
TRICKS = [
    "../../admin/x?a=",
    "..",
    ".",
    "%2e%2e",
    "%2e%2e%2fadmin",
    "..%2F..%2Fadmin",
    "CA1/../../x",
    "CA1/",
    "/CA1",
    "CA1?x=1",
    "CA1#frag",
    "CA1%00",
    "CA\x00x",
    "CA1\n",
    "CA 1",
    "CA;1",
    "ＣＡ１",
    "CA✓",
    "CA\u202e1",
    "x" * 65,
    "x" * 5000,
    "CA%2F..",
    "CA\\..\\x",
    "CA1.callbacks",
    "CA:1",
]


def fuzzed_sids(seed: int, count: int) -> list[str]:
    """Tricks glued to valid sids and to each other, by a seeded generator."""
    rng = random.Random(seed)
    parts = [*TRICKS, "CA", "..", "/", "%2f", "%252e", "?", "#", "\\", "\x00", "é", "\ud7ff"]
    return ["".join(rng.choice(parts) for _ in range(rng.randint(2, 4))) for _ in range(count)]


async def test_callsid_tricks_never_leave_their_path_segment(
    exposed: DaemonProcess, node_api: FakeNodeApi
) -> None:
    hook = {"X-Voicebridge-Token": EXOTEL_TOKEN}
    accepted: list[str] = []
    statuses: list[tuple[str, int]] = []
    async with aiohttp.ClientSession() as session:
        for index, sid in enumerate([*VALID_SIDS, *TRICKS, *fuzzed_sids(14, 60)]):
            endpoint = ("status", "recording")[index % 2]
            fields = {"CallSid": sid, "Status": f"completed-{index}", "RecordingUrl": f"https://r/{index}"}
            body: Any = json.dumps(fields) if index % 3 == 0 else fields
            headers = {**hook, "Content-Type": "application/json"} if index % 3 == 0 else hook
            async with session.post(
                f"{exposed.http}/webhooks/exotel/{endpoint}", data=body, headers=headers
            ) as response:
                statuses.append((sid, response.status))
                if response.status == 200:
                    accepted.append(sid.strip())
            # The same in the query string, percent-encoded as a client would send it.
            async with session.post(
                f"{exposed.http}/webhooks/exotel/status?CallSid={quote(sid, safe='')}&Status=q{index}",
                headers=hook,
            ) as response:
                statuses.append((sid, response.status))
                if response.status == 200:
                    accepted.append(sid.strip())
    sid_shape = re.compile(r"[A-Za-z0-9_-]{1,64}")
    for sid, status in statuses:
        # Exotel quotes some values; the daemon strips whitespace and quotes off every field first.
        assert status == (200 if sid_shape.fullmatch(sid.strip().strip('"')) else 400), (sid, status)

    # Every accepted callback reaches the backend, each under its own call's path and nowhere else.
    async def all_delivered() -> bool:
        return len(node_api.seen("/callbacks")) >= len(accepted)

    await eventually(all_delivered, 60)
    delivered = node_api.seen("/callbacks")
    assert len(delivered) >= len(accepted) >= 2 * len(VALID_SIDS)
    allowed = re.compile(
        r"/v1/(calls/[A-Za-z0-9_-]{1,64}/(callbacks|events|cost|conversation|messages|dtmf)"
        r"|budget/check|business|health)"
    )
    for seen in node_api.requests:
        assert allowed.fullmatch(seen.path) and not seen.query.keys() - {"to"}, (seen.path, seen.query)
    assert {seen.path.split("/")[3] for seen in delivered} == set(accepted) >= set(VALID_SIDS)
    no_traceback(exposed)


async def test_the_exotel_token_is_not_stored_with_a_callback(
    exposed: DaemonProcess, node_api: FakeNodeApi
) -> None:
    # #14 review 6: request_fields merged ?token=<webhook_token> into the callback's stored fields, and the
    # outbox sent it on to the backend.
    url = f"{exposed.http}/webhooks/exotel/status?token={EXOTEL_TOKEN}&CallSid=CA-token-leak"
    status, body = await request("POST", url, data={"Status": "completed", "token": EXOTEL_TOKEN})
    assert status == 200, body

    async def delivered() -> bool:
        return bool(node_api.seen("/v1/calls/CA-token-leak/callbacks"))

    assert await eventually(delivered, 60)
    (seen,) = node_api.seen("/v1/calls/CA-token-leak/callbacks")
    assert seen.body["fields"]["Status"] == "completed", seen.body
    assert EXOTEL_TOKEN not in json.dumps(seen.body) and "token" not in seen.body["fields"], seen.body
    assert EXOTEL_TOKEN not in exposed.log()


async def sid_rejections(daemon: DaemonProcess) -> float:
    lines = await metric_lines(daemon, "voicebridge_protocol_rejections_total")
    return sum(value for key, value in lines.items() if "bad_call_sid" in key or "bad_stream_sid" in key)


async def test_sids_in_urls_and_starts_are_checked(door: DaemonProcess) -> None:
    # The stream URL's sid, a start's call sid and stream sid, and management's sid.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await SimulatedCaller(f"{door.ws}/ws/stream/CA.1/0.00", call_sid="CA.1").connect()
    assert refused.value.status == 400
    host = door.ws.removeprefix("ws://")
    static = f"ws://{EXOTEL_USER}:{EXOTEL_PASSWORD}@{host}/ws/stream"
    for call_sid, stream_sid in (("CA..1", "MZ-1"), ("CA:1", "MZ-2"), ("CA-3", "MZ.3")):
        before = await sid_rejections(door)
        caller = SimulatedCaller(static, call_sid=call_sid)
        caller.wire.stream_sid = stream_sid
        async with caller:

            async def refused(before: float = before) -> bool:
                return await sid_rejections(door) > before

            assert await eventually(refused, 30), (call_sid, stream_sid)
            assert not caller.log.frames, call_sid
    status, body = await request("POST", f"{door.http}/api/calls/CA.x/hangup", BEARER)
    assert status == 400, body
    status, body = await request(
        "POST", f"{door.http}/webhooks/exotel/incoming", {"Authorization": basic()}, {"CallSid": "../x"}
    )
    assert status == 400, body
    lines = await metric_lines(door, "voicebridge_webhooks_total")
    assert lines.get('voicebridge_webhooks_total{endpoint="exotel_incoming",result="bad_call_sid"}'), lines


async def test_numbers_and_json_field_counts_are_bounded(door: DaemonProcess) -> None:
    # #14 review 10: From/To of any length went into the registry, records and logs; JSON had no field cap.
    too_long = "+91" + "9" * 62
    for fields in ({"From": too_long}, {"To": too_long}, {"CallFrom": too_long}, {"CallTo": too_long}):
        form = {"CallSid": "CA-long-1", "From": "+919800000001", "To": "+918000000002", **fields}
        status, body = await request(
            "POST", f"{door.http}/webhooks/exotel/incoming", {"Authorization": basic()}, form
        )
        assert status == 400, (fields, status, body)
    url = f"{door.http}/webhooks/twilio/incoming"
    form = {"CallSid": "CA-long-2", "From": too_long, "To": "+15550000002"}
    signed = {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, form)}
    assert (await request("POST", url, signed, form))[0] == 400
    wide = json.dumps({"CallSid": "CA-wide", **{f"k{n}": "v" for n in range(300)}})
    for path, headers in (
        ("/webhooks/exotel/status", {"Authorization": basic()}),
        ("/api/calls/CA-wide/transfer", BEARER),
    ):
        status, body = await request(
            "POST", f"{door.http}{path}", {**headers, "Content-Type": "application/json"}, wide
        )
        assert status == 400, (path, status, body)
    # The stream's start: refused before any call exists.
    host = door.ws.removeprefix("ws://")
    static = f"ws://{EXOTEL_USER}:{EXOTEL_PASSWORD}@{host}/ws/stream"
    before = await bad_numbers(door)
    async with SimulatedCaller(static, call_sid="CA-long-3", from_number=too_long) as caller:

        async def refused() -> bool:
            return await bad_numbers(door) > before

        assert await eventually(refused, 30)
        assert not caller.log.frames
    no_traceback(door)


async def bad_numbers(daemon: DaemonProcess) -> float:
    lines = await metric_lines(daemon, "voicebridge_protocol_rejections_total")
    # The translator refuses an over-long number first (field_too_long); the stream's own check
    # (bad_number) stands behind it for a translator that does not.
    kinds = ('kind="bad_number"', 'kind="field_too_long"')
    return sum(value for key, value in lines.items() if any(kind in key for kind in kinds))


# --- item 3: malformed stream tokens are refusals ---------------------------------------------------------


async def test_malformed_stream_tokens_are_refused_not_500(door: DaemonProcess) -> None:
    for token in ("²²²²²²²²²².abc", "1" * 5000 + ".abc", "１２３.abc", "%ff%fe.x", ".abc", "12.", "-1.ab"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await SimulatedCaller(f"{door.ws}/ws/stream/CA-tok/{token}", call_sid="CA-tok").connect()
        assert refused.value.status in (401, 403), (token, refused.value.status)
    no_traceback(door)


# --- items 4 and 26: management behind a proxy, single-use stream tokens ----------------------------------


async def test_management_needs_the_token_when_auth_is_on(door: DaemonProcess) -> None:
    calls = f"{door.http}/api/calls/active"
    # A same-host proxy that adds no header looks like loopback: with webhook auth on, /api/* needs the token.
    assert (await request("GET", calls))[0] == 401
    assert (await request("POST", f"{door.http}/api/calls/CA-x/transfer", data=b"{}"))[0] == 401
    assert (await request("GET", calls, BEARER))[0] == 200
    # /metrics and /health too (#14 review 7): a bare same-host proxy_pass looks like loopback, no header.
    for header in ({}, {"Forwarded": "for=198.51.100.7"}, {"X-Real-IP": "198.51.100.7"}):
        assert (await request("GET", f"{door.http}/metrics", header))[0] == 401, header
        assert (await request("GET", f"{door.http}/health", header))[0] == 401, header
        assert (await request("GET", f"{door.http}/metrics", {**header, **BEARER}))[0] == 200, header
        assert (await request("GET", f"{door.http}/health", {**header, **BEARER}))[0] == 200, header


async def test_management_without_a_token_refuses_api_when_exposed(exposed: DaemonProcess) -> None:
    for path in ("/api/calls/active", "/metrics", "/health"):
        status, body = await request("GET", f"{exposed.http}{path}")
        assert status == 403, (path, body)
    assert "management.token" in exposed.log()


async def test_a_stream_token_is_single_use(door: DaemonProcess) -> None:
    url = await exotel_stream_url(door, "CA-once")
    async with SimulatedCaller(url, call_sid="CA-once") as caller:
        assert await caller.listen_until_mark(timeout=60) is not None
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await SimulatedCaller(url, call_sid="CA-once").connect()
    assert refused.value.status == 401


async def test_a_refused_upgrade_does_not_spend_the_stream_token(door: DaemonProcess) -> None:
    # #14 review 1: the token was spent in the middleware, before the handler could still refuse.
    url = await exotel_stream_url(door, "CA-unspent")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await SimulatedCaller(url + "?sample-rate=12345", call_sid="CA-unspent").connect()
    assert refused.value.status == 400
    status, _ = await request("GET", url.replace("ws://", "http://", 1))  # no Upgrade header
    assert status == 400
    async with SimulatedCaller(url, call_sid="CA-unspent") as caller:
        assert await caller.listen_until_mark(timeout=60) is not None


async def test_two_racing_upgrades_with_one_token_make_one_call(door: DaemonProcess) -> None:
    url = await exotel_stream_url(door, "CA-race")
    callers = [SimulatedCaller(url, call_sid="CA-race") for _ in range(2)]

    async def attempt(caller: SimulatedCaller) -> str:
        try:
            try:
                await caller.connect()
            except aiohttp.WSServerHandshakeError as refused:
                return f"refused {refused.status}"
            if await caller.listen_until_mark(timeout=60) is not None:
                return "call"
            return f"closed {caller.close_code}"
        finally:
            await caller.hangup()

    outcomes = sorted(await asyncio.gather(*(attempt(caller) for caller in callers)))
    assert outcomes[0] == "call" and outcomes[1] in ("closed 1008", "refused 401"), outcomes


# --- item 18: Twilio signature mode serves real calls ---------------------------------------------------


async def test_signed_twilio_call_streams_end_to_end(door: DaemonProcess) -> None:
    url = f"{door.http}/webhooks/twilio/incoming"
    form = {"CallSid": "CA-signed-1", "From": "+15550000001", "To": "+15550000002"}
    headers = {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, form)}
    status, twiml = await request("POST", url, headers, form)
    assert status == 200, twiml
    stream = ElementTree.fromstring(twiml).find("Connect/Stream")
    assert stream is not None, twiml
    stream_url = stream.attrib["url"]
    assert "/ws/stream/CA-signed-1/" in stream_url
    async with SimulatedCaller(stream_url, provider="twilio", call_sid="CA-signed-1") as caller:
        assert await caller.listen_until_mark(timeout=60) is not None
        await caller.stop()
    # A JSON body, which the signature does not cover, is refused even when the bare URL is signed.
    bare = {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, {}), "Content-Type": "application/json"}
    status, body = await request("POST", url, bare, json.dumps(form))
    assert status in (401, 415), body


async def test_signed_twilio_requests_with_repeated_keys_verify(door: DaemonProcess) -> None:
    # #14 review 8: repeated form keys collapsed to their last value before the signature was checked.
    url = f"{door.http}/webhooks/twilio/incoming"
    pairs = [("CallSid", "CA-signed-2"), ("From", "+15550000001"), ("To", "+15550000002")]
    pairs += [("StirVerstat", "TN-Validation-Passed-A"), ("StirVerstat", "No-TN-Validation")]
    payload = url + "CallSid" + "CA-signed-2" + "From+15550000001"
    payload += "StirVerstatTN-Validation-Passed-AStirVerstatNo-TN-Validation" + "To+15550000002"
    signature = base64.b64encode(hmac.new(TWILIO_TOKEN.encode(), payload.encode(), hashlib.sha1).digest())
    status, twiml = await request("POST", url, {"X-Twilio-Signature": signature.decode()}, pairs)
    assert status == 200 and "/ws/stream/CA-signed-2/" in twiml, (status, twiml)


async def test_a_stream_upgrade_signed_over_its_ws_url_is_let_in(door: DaemonProcess) -> None:
    # #14 review 8: with public_url unset the upgrade was checked against http://, not the ws:// URL.
    stream = f"{door.ws}/ws/stream"
    headers = {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, stream, {})}
    async with aiohttp.ClientSession() as session, session.ws_connect(stream, headers=headers) as ws:
        assert not ws.closed
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        over_http = {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, f"{door.http}/ws/stream", {})}
        async with aiohttp.ClientSession() as session, session.ws_connect(stream, headers=over_http):
            pass
    assert refused.value.status == 401


# --- item 19: hostile input is a counted 4xx with one log line --------------------------------------------

DEEP_JSON = "[" * 100_000 + "]" * 100_000
HOSTILE_BODIES: list[tuple[str, bytes]] = [
    (FORM, b"CallSid=\xff\xfe&From=1"),
    (FORM, b"CallSid=%ff%fe"),
    (FORM, b"CallSid=%ED%A0%80"),
    (FORM + "; charset=nope", b"CallSid=CA1"),
    (FORM + "; charset=base64", b"CallSid=CA1"),
    ("multipart/form-data", b"--x\r\n"),
    (
        "multipart/form-data; boundary=XX",
        b'--XX\r\nContent-Disposition: form-data; name="CallSid"\r\n\r\nCA1',
    ),
    (FORM, random.Random(19).randbytes(400)),
    ("application/json", DEEP_JSON.encode()),
    ("application/json", b'{"CallSid": "CA1", "n": ' + b"7" * 5000 + b"}"),
    ("application/json", b'{"CallSid": "\\ud800"}'),
    ("application/json", b'{"CallSid": "\xff"}'),
    ("application/json", b"[1]"),
    ("application/json; charset=nope", b'{"CallSid": "CA1"}'),
]


WEBHOOKS = [
    ("/webhooks/exotel/incoming", {"Authorization": basic()}),
    ("/webhooks/exotel/passthru", {"Authorization": basic()}),
    ("/webhooks/exotel/status", {"Authorization": basic()}),
    ("/webhooks/exotel/recording", {"Authorization": basic()}),
    ("/webhooks/twilio/incoming", {"X-Twilio-Signature": "unsigned"}),  # parsed before the check
]


async def clients_gone(daemon: DaemonProcess) -> float:
    lines = await metric_lines(daemon, "voicebridge_http_rejections_total")
    return sum(value for key, value in lines.items() if 'reason="client_gone"' in key)


async def test_hostile_bodies_on_every_webhook_are_4xx(door: DaemonProcess) -> None:
    before = sum((await metric_lines(door, "voicebridge_http_rejections_total")).values())
    refused = 0
    for path, headers in WEBHOOKS:
        for content_type, body in HOSTILE_BODIES:
            status, text = await request(
                "POST", f"{door.http}{path}", {**headers, "Content-Type": content_type}, body
            )
            assert 400 <= status < 500, (path, content_type, body[:40], status, text[:200])
            refused += 1
    status, text = await request(
        "POST",
        f"{door.http}/api/calls/CA-x/transfer",
        {**BEARER, "Content-Type": "application/json"},
        DEEP_JSON,
    )
    assert status == 400, text
    after = sum((await metric_lines(door, "voicebridge_http_rejections_total")).values())
    assert after - before >= refused
    no_traceback(door)


async def test_garbage_compressed_bodies_are_4xx(door: DaemonProcess) -> None:
    # #14 review 2: aiohttp's RequestPayloadError from request.read() was a 500 with a traceback.
    for path, headers in WEBHOOKS:
        for encoding in ("gzip", "deflate"):
            status, text = await request(
                "POST",
                f"{door.http}{path}",
                {**headers, "Content-Type": FORM, "Content-Encoding": encoding},
                b"CallSid=CA1 is not " + encoding.encode(),
            )
            assert 400 <= status < 500, (path, encoding, status, text[:200])
    # A route that never reads the body: aiohttp reads (and decodes) the rest itself after the response.
    for path in ("/live", "/no/such/route", "/api/calls/active"):
        headers = {"Content-Type": FORM, "Content-Encoding": "gzip"}
        status, text = await request("POST", f"{door.http}{path}", headers, b"not gzip at all")
        assert 400 <= status < 500, (path, status, text[:200])
    no_traceback(door)


async def test_a_client_that_hangs_up_mid_body_is_one_quiet_line(door: DaemonProcess) -> None:
    # #14 review 2: Content-Length 100, 3 bytes, gone: a ConnectionResetError traceback at ERROR.
    before = await clients_gone(door)
    for path, headers in WEBHOOKS:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        _reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Type: {FORM}\r\n"
            "Content-Length: 100\r\n\r\nCal".encode()
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def all_counted() -> bool:
        return await clients_gone(door) - before >= len(WEBHOOKS)

    assert await eventually(all_counted, 30)
    no_traceback(door)
    assert "client_gone" in door.log()


async def test_raw_header_bytes_and_header_floods_are_4xx(
    door: DaemonProcess, exposed: DaemonProcess
) -> None:
    def post(path: str, header: bytes, port: int) -> bytes:
        return (
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {FORM}\r\n"
                "Content-Length: 11\r\nConnection: close\r\n"
            ).encode()
            + header
            + b"\r\n\r\nCallSid=CA1"
        )

    cases = [
        (door, "/webhooks/exotel/incoming", b"Authorization: Basic \xff\xfe\x80"),
        (door, "/webhooks/twilio/incoming", b"X-Twilio-Signature: \xff\xfe\x80="),
        (door, "/api/calls/active", b"Authorization: Bearer \xff\xfe\x80"),
        (exposed, "/webhooks/exotel/status", b"X-Voicebridge-Token: \xff\xfe\x80" + b"x" * 20),
        (door, "/webhooks/exotel/incoming", b"X-Long: " + b"a" * 20_000),
        (door, "/webhooks/exotel/incoming", b"\r\n".join(b"X-H%d: 1" % n for n in range(300))),
    ]
    for daemon, path, header in cases:
        status = await raw_request(daemon.port, post(path, header, daemon.port))
        assert 400 <= status < 500, (path, header[:30], status)
    lines = await metric_lines(door, "voicebridge_http_rejections_total")
    assert any('reason="bad_http_request"' in key for key in lines), lines
    no_traceback(door)
    no_traceback(exposed)


BAD_HOSTS = [b"\xff\xfe", b"a b", b"evil/x", b"x@y", b"h:1:2", b"h:99999", b'"><x', b"[::1", b"h\\x"]


def post_with_host(path: str, host: bytes, header: bytes = b"") -> bytes:
    body = b"CallSid=CA-host-1&From=%2B15550000001&To=%2B15550000002"
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: "
        + host
        + b"\r\n"
        + header
        + f"Content-Type: {FORM}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


async def test_a_host_header_that_is_no_host_is_refused(door: DaemonProcess, daemon: DaemonProcess) -> None:
    # #14 review 3: with public_url unset the Host goes into the stream URL we hand out; b"\xff" was a 500.
    auth = f"Authorization: {basic()}\r\n".encode()
    for host in BAD_HOSTS:
        assert await raw_request(door.port, post_with_host("/webhooks/exotel/incoming", host, auth)) == 400, (
            host
        )
        for path in ("/webhooks/twilio/incoming", "/webhooks/exotel/incoming"):  # open mode
            assert await raw_request(daemon.port, post_with_host(path, host)) == 400, (path, host)
    for host in (b"example.com", b"203.0.113.9:8080", b"[2001:db8::1]:443", b"localhost"):
        assert await raw_request(daemon.port, post_with_host("/webhooks/twilio/incoming", host)) == 200, host
    lines = await metric_lines(door, "voicebridge_http_rejections_total")
    assert any('reason="bad_host"' in key for key in lines), lines
    no_traceback(door)
    no_traceback(daemon)


# --- item 22: no forged log lines -------------------------------------------------------------------------


async def test_a_newline_in_a_caller_field_cannot_forge_a_log_line(door: DaemonProcess) -> None:
    forged = "2099-01-01 00:00:00,000 ERROR x [-] FORGED"  # a From fits in 64 characters
    url = await exotel_stream_url(door, "CA-forge", From=f"+91\n{forged}\r\x1b[2J\x85x")
    async with SimulatedCaller(url, call_sid="CA-forge") as caller:
        assert await caller.listen_until_mark(timeout=60) is not None
    # Without credentials on an enabled provider's prefix: refused, and the refusal line names the path.
    status, _ = await request("GET", f"{door.http}/webhooks/exotel/x%0a{quote(forged)}%0d%1b")
    assert status == 401
    log = door.log()
    assert "refused GET /webhooks/exotel/x\\n2099-01-01 00:00:00,000 ERROR" in log, log[-2000:]
    assert "+91\\n2099-01-01" in log  # the From was logged too...
    for line in log.splitlines():
        assert not line.startswith("2099-") and "\x1b" not in line and "\x85" not in line, line


async def test_control_socket_checks_sids_too(door: DaemonProcess) -> None:
    reader, writer = await asyncio.open_unix_connection(str(door.control_socket))
    try:
        for call_sid, code in (
            ("../CA1", "bad_call_sid"),
            ("CA:1", "bad_call_sid"),
            ("CA-none", "unknown_call"),
        ):
            request_line = {"version": 1, "id": 7, "op": "show", "call_sid": call_sid}
            writer.write(json.dumps(request_line).encode() + b"\n")
            await writer.drain()
            answer = json.loads(await asyncio.wait_for(reader.readline(), 30))
            assert answer["ok"] is False and answer["code"] == code, answer
    finally:
        writer.close()
