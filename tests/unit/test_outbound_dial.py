"""Issue 17, item 1 (dial one call) and item 4's E.164 check: the pieces below the daemon — number
validation, each provider's create-call request, the dial-id stream tokens, the attempt events and the
dialer against a local fake of each provider's REST endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from voicebridge.admission.registry import CallRegistry
from voicebridge.call.answering import twilio_answered_by
from voicebridge.call.outbound_start import business_number, outbound_start
from voicebridge.config.schema import ExotelConfig, OutboundConfig, Settings, TwilioConfig
from voicebridge.outbound.attempts import AttemptTracker
from voicebridge.outbound.dialer import CallAttemptEnded, DialFailed, DialRefused, DialRequest
from voicebridge.outbound.numbers import checked_e164, is_e164
from voicebridge.outbound.pending import PendingDial, PendingDials, is_dial_id
from voicebridge.outbound.requests import dial_request
from voicebridge.outbound.service import OutboundDialer
from voicebridge.outbound.status import note_status
from voicebridge.server.keys import ATTEMPTS, DIALER, REGISTRY
from voicebridge.telephony import exotel_rest, twilio_rest
from voicebridge.telephony.auth import AuthFailure
from voicebridge.telephony.events import Start
from voicebridge.telephony.stream_tokens import StreamTokens

TWILIO_ACCOUNT = "AC" + "a" * 32
TWILIO_CALL = "CA" + "b" * 32


@pytest.mark.parametrize("number", ["+919800000001", "+14155550100", "+4420794600"])
def test_e164_accepts_numbers(number: str) -> None:
    assert is_e164(number)
    assert checked_e164(number) == number


@pytest.mark.parametrize(
    "number",
    [
        "919800000001",
        "+0919800000001",
        "+91 98000 00001",
        "+1234567",
        "+1234567890123456",
        "+91980000000²",
        "",
    ],
)
def test_e164_refuses_the_rest(number: str) -> None:
    assert not is_e164(number)
    with pytest.raises(DialRefused) as refused:
        checked_e164(number)
    assert refused.value.reason == "bad_number"


def test_exotel_stream_form() -> None:
    form = exotel_rest.connect_form(
        ExotelConfig(),
        OutboundConfig(ring_timeout_s=25, time_limit_s=600),
        "+919800000001",
        "08012345678",
        "wss://bot.example.com/ws/stream/DLx/123.abc",
        "https://bot.example.com/webhooks/exotel/status",
        {"order_id": "A17", "name": "Asha"},
    )
    assert form == {
        "From": "+919800000001",
        "CallerId": "08012345678",
        "StreamUrl": "wss://bot.example.com/ws/stream/DLx/123.abc",
        "StreamType": "bidirectional",
        "StatusCallback": "https://bot.example.com/webhooks/exotel/status",
        "TimeLimit": "600",
        "TimeOut": "25",
        "Record": "false",
        "CustomField": '{"order_id":"A17","name":"Asha"}',
    }


def test_exotel_flow_form_and_url_limits() -> None:
    exotel = ExotelConfig(
        outbound_mode="flow", outbound_flow_url="http://my.exotel.com/acc/exoml/start_voice/9"
    )
    form = exotel_rest.connect_form(
        exotel, OutboundConfig(), "+919800000001", "0801", "wss://x/s", "https://x/st", {}
    )
    assert form["Url"] == "http://my.exotel.com/acc/exoml/start_voice/9"
    assert "StreamUrl" not in form and "CustomField" not in form
    with pytest.raises(ValueError, match="under 600"):
        exotel_rest.connect_form(
            ExotelConfig(), OutboundConfig(), "+919800000001", "0801", "w" * 600, "s", {}
        )
    with pytest.raises(ValueError, match="outbound_flow_url"):
        ExotelConfig(outbound_mode="flow")
    assert (
        ExotelConfig(subdomain="api.in.exotel.com", account_sid="acc").rest_base
        == "https://api.in.exotel.com"
    )


def test_twilio_form_escapes_context_in_twiml() -> None:
    hostile = {"note": '"/><Hangup/><Parameter name="x', "amp": "a&b<c>"}
    form = twilio_rest.create_form(
        TwilioConfig(machine_detection="DetectMessageEnd"),
        OutboundConfig(),
        "+14155550100",
        "+14155550199",
        "wss://bot.example.com/ws/stream/DLx/1.a",
        "https://bot.example.com/webhooks/twilio/status",
        hostile,
    )
    twiml = form["Twiml"]
    assert "<Hangup/>" not in twiml and "a&amp;b&lt;c&gt;" in twiml
    assert twiml.count("<Parameter ") == 2
    assert twiml.startswith('<Response><Connect><Stream url="wss://bot.example.com/ws/stream/DLx/1.a">')
    assert (form["To"], form["From"], form["MachineDetection"], form["AsyncAmd"]) == (
        "+14155550100",
        "+14155550199",
        "DetectMessageEnd",
        "true",
    )
    assert "MachineDetection" not in twilio_rest.create_form(
        TwilioConfig(), OutboundConfig(), "+1", "+2", "w", "s", {}
    )


def test_twilio_twiml_over_its_limit_is_refused() -> None:
    context = {f"k{i}": "v" * 200 for i in range(25)}
    with pytest.raises(ValueError, match="at most 4000"):
        twilio_rest.create_form(TwilioConfig(), OutboundConfig(), "+1", "+2", "wss://x/s", "s", context)


def test_dial_token_admits_once_and_refuses_forged_reused_and_expired() -> None:
    pending = PendingDials(StreamTokens(b"k" * 32), ttl_s=60)
    dial, token = pending.open(DialRequest("+919800000001", context={"order_id": "A17"}), "exotel", now=1000)
    assert is_dial_id(dial.dial_id)
    with pytest.raises(AuthFailure):  # forged: a token for another dial id
        pending.check(dial.dial_id, StreamTokens(b"k" * 32).issue("DL" + "0" * 24, now=1000), now=1001)
    with pytest.raises(AuthFailure):  # forged: another key
        pending.check(dial.dial_id, StreamTokens(b"z" * 32).issue(dial.dial_id, now=1000), now=1001)
    admitted = pending.admit(dial.dial_id, token, now=1001)
    assert admitted.request.context == {"order_id": "A17"} and len(pending) == 0
    with pytest.raises(AuthFailure, match="already used"):  # replayed
        pending.admit(dial.dial_id, token, now=1002)
    late, late_token = pending.open(DialRequest("+919800000001"), "exotel", now=1000)
    with pytest.raises(AuthFailure):  # expired
        pending.admit(late.dial_id, late_token, now=1000 + 301)


def test_attempts_tell_each_subscriber_once_per_call() -> None:
    tracker = AttemptTracker()
    heard: list[CallAttemptEnded] = []
    other: list[CallAttemptEnded] = []

    def broken(event: CallAttemptEnded) -> None:
        raise RuntimeError("listener bug")

    tracker.subscribe(heard.append)
    tracker.subscribe(broken)
    tracker.subscribe(other.append)
    event = CallAttemptEnded("CA1", "exotel", "busy")
    assert tracker.ended(event)
    assert not tracker.ended(CallAttemptEnded("CA1", "exotel", "completed"))  # the stream's end, later
    assert heard == other == [event]


class FakeRest:
    """The create-call endpoint of either provider: records each form, answers as configured."""

    def __init__(self, status: int, body: dict[str, object]) -> None:
        self.status, self.body = status, body
        self.forms: list[dict[str, str]] = []
        self.auth: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.forms.append({k: v[0] for k, v in parse_qs(await request.text()).items()})
        self.auth.append(request.headers.get("Authorization", ""))
        self.paths = request.path
        return web.json_response(self.body, status=self.status)


async def serve(fake: FakeRest) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", fake.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def dialer(settings: Settings, capacity: int = 4) -> OutboundDialer:
    return OutboundDialer(settings, CallRegistry(capacity), PendingDials(StreamTokens(), 180))


async def test_dialer_places_an_exotel_call() -> None:
    fake = FakeRest(200, {"Call": {"Sid": "c0ffee17", "Status": "in-progress"}})
    async for base in serve(fake):
        settings = Settings(
            exotel={
                "account_sid": "acme1",
                "api_key": "key",
                "api_token": "tok",
                "api_base": base,
                "caller_id": "0801",
            },
            server={"public_url": "https://bot.example.com"},
        )
        placing = dialer(settings)
        result = await placing.dial(DialRequest("+919800000001", context={"order_id": "A17"}, origin="cli"))
        assert (result.call_sid, result.provider) == ("c0ffee17", "exotel")
        assert fake.paths == "/v1/Accounts/acme1/Calls/connect.json"
        assert fake.auth == ["Basic a2V5OnRvaw=="]  # key:tok
        form = fake.forms[0]
        assert form["From"] == "+919800000001" and form["CallerId"] == "0801"
        assert form["StreamUrl"].startswith("wss://bot.example.com/ws/stream/DL")
        assert form["StatusCallback"] == "https://bot.example.com/webhooks/exotel/status"
        # The pending dial knows the provider's sid now: its status callback can be matched.
        pending = placing.pending.by_call_sid("c0ffee17")
        assert pending is not None and pending.request.origin == "cli"


async def test_dialer_places_a_twilio_call_with_the_dial_id_parameter() -> None:
    fake = FakeRest(201, {"sid": TWILIO_CALL, "status": "queued"})
    async for base in serve(fake):
        settings = Settings(
            twilio={
                "enabled": True,
                "account_sid": TWILIO_ACCOUNT,
                "auth_token": "t",
                "api_base": base,
                "caller_id": "+14155550199",
            },
        )
        result = await dialer(settings).dial(DialRequest("+14155550100", provider="twilio"))
        assert (result.call_sid, result.provider) == (TWILIO_CALL, "twilio")
        assert fake.paths == f"/2010-04-01/Accounts/{TWILIO_ACCOUNT}/Calls.json"
        assert '<Parameter name="DialId" value="DL' in fake.forms[0]["Twiml"]


async def test_dialer_refusals_and_failures() -> None:
    fake = FakeRest(503, {"message": "down"})
    async for base in serve(fake):
        settings = Settings(
            exotel={
                "account_sid": "a",
                "api_key": "k",
                "api_token": "t",
                "api_base": base,
                "caller_id": "0801",
            },
            twilio={"enabled": False},
        )
        with pytest.raises(DialRefused, match="bad_number"):
            await dialer(settings).dial(DialRequest("98000"))
        with pytest.raises(DialRefused, match="provider_disabled"):
            await dialer(settings).dial(DialRequest("+919800000001", provider="twilio"))
        full = dialer(settings, capacity=1)
        full.pending.open(DialRequest("+919800000002"), "exotel")  # one call still ringing fills it
        with pytest.raises(DialRefused) as refused:
            await full.dial(DialRequest("+919800000001"))
        assert refused.value.reason == "at_capacity" and not fake.forms
        placing = dialer(settings)
        with pytest.raises(DialFailed) as failed:
            await placing.dial(DialRequest("+919800000001"))
        assert failed.value.retryable and len(placing.pending) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"to": "+91 98000"}, "bad_number"),
        ({"to": 919800000001}, "bad_request"),
        ({"to": "+919800000001", "from": "x" * 100}, "bad_request"),
        ({"to": "+919800000001", "provider": "plivo"}, "bad_request"),
        ({"to": "+919800000001", "context": ["a"]}, "bad_request"),
        ({"to": "+919800000001", "context": {"k": 1}}, "bad_request"),
        ({"to": "+919800000001", "context": {"api_key": "s"}}, "bad_request"),
        ({"to": "+919800000001", "context": {"k": "line\nforged"}}, "bad_request"),
        ({"to": "+919800000001", "Url": "http://evil.example"}, "bad_request"),
    ],
)
def test_hostile_dial_bodies_are_refused(body: dict[str, object], reason: str) -> None:
    with pytest.raises(DialRefused) as refused:
        dial_request(body, origin="api")
    assert refused.value.reason == reason


def test_a_good_dial_body() -> None:
    request = dial_request(
        {"to": "+919800000001", "from": "0801", "context": {"order_id": "A17"}, "provider": "twilio"}, "api"
    )
    assert (
        request.to_number,
        request.from_number,
        dict(request.context),
        request.provider,
        request.origin,
    ) == (
        "+919800000001",
        "0801",
        {"order_id": "A17"},
        "twilio",
        "api",
    )


def status_app(settings: Settings) -> tuple[web.Application, OutboundDialer, list[CallAttemptEnded]]:
    app = web.Application()
    registry = app[REGISTRY] = CallRegistry(4)
    tracker = app[ATTEMPTS] = AttemptTracker()
    placing = app[DIALER] = OutboundDialer(settings, registry, PendingDials(StreamTokens(), 180), tracker)
    heard: list[CallAttemptEnded] = []
    tracker.subscribe(heard.append)
    return app, placing, heard


def test_a_terminal_status_ends_the_attempt_once_and_inbound_callbacks_are_not_attempts() -> None:
    app, placing, heard = status_app(Settings())
    dial, _ = placing.pending.open(DialRequest("+919800000001"), "twilio")
    placing.pending.placed(dial.dial_id, TWILIO_CALL)
    placing.attempts.started(TWILIO_CALL)
    note_status(app, "twilio", TWILIO_CALL, {"CallStatus": "ringing"})
    note_status(app, "twilio", TWILIO_CALL, {"AnsweredBy": "machine_end_beep"})
    assert heard == [] and len(placing.pending) == 1
    note_status(app, "twilio", TWILIO_CALL, {"CallStatus": "no-answer"})
    note_status(app, "twilio", TWILIO_CALL, {"CallStatus": "no-answer"})  # the provider's retry
    assert heard == [CallAttemptEnded(TWILIO_CALL, "twilio", "no-answer", "machine")]
    assert len(placing.pending) == 0  # it will never stream: its dial is closed
    note_status(app, "exotel", "inbound1", {"Status": "completed"})
    assert len(heard) == 1
    assert [twilio_answered_by(raw) for raw in ("human", "machine_start", "fax", "unknown", "")] == [
        "human",
        "machine",
        "machine",
        "unknown",
        "unknown",
    ]


def test_a_dialled_start_becomes_the_call_the_dial_described() -> None:
    # The wire's own context (Twilio's <Parameter>s include our DialId) gives way to the request's.
    wire = Start(
        "twilio", "MZ1", TWILIO_CALL, from_number="", to_number="", context={"DialId": "DLx", "a": "b"}
    )
    dial = PendingDial(
        "DL" + "0" * 24,
        DialRequest("+919800000001", context={"order_id": "A17"}),
        "twilio",
        expires=0,
        call_sid=TWILIO_CALL,
        caller_id="+14155550199",
    )
    start = outbound_start(wire, dial)
    assert (start.call_sid, start.from_number, start.to_number, start.direction) == (
        TWILIO_CALL,
        "+14155550199",
        "+919800000001",
        "outbound",
    )
    assert dict(start.context) == {"order_id": "A17"}
    # The business answering an outbound call is ours (the caller id), an inbound one's the number called.
    assert business_number(start) == "+14155550199"
    assert business_number(wire) == ""
