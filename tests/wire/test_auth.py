"""Authentication: each mode accepts and rejects, as pure checks and on a real daemon."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from voicebridge.server.access import client_address
from voicebridge.sim.caller import SimulatedCaller
from voicebridge.sim.daemon import DaemonProcess, start_daemon
from voicebridge.telephony.auth import AuthFailure, check_basic, check_ip, check_token
from voicebridge.telephony.stream_tokens import StreamTokens
from voicebridge.telephony.twilio import check_twilio_signature, twilio_signature

# Twilio's documented request-validation example (security docs; the same vector in its SDKs' tests).
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
TWILIO_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- pure checks -------------------------------------------------------------------------------------


def test_twilio_documented_vector_verifies_and_tampering_does_not() -> None:
    assert twilio_signature("12345", TWILIO_URL, TWILIO_PARAMS) == TWILIO_SIGNATURE
    check_twilio_signature(TWILIO_SIGNATURE, "12345", TWILIO_URL, TWILIO_PARAMS)
    for signature, token, url, params in (
        (TWILIO_SIGNATURE, "54321", TWILIO_URL, TWILIO_PARAMS),
        (TWILIO_SIGNATURE, "12345", TWILIO_URL + "&x=1", TWILIO_PARAMS),
        (TWILIO_SIGNATURE, "12345", TWILIO_URL, {**TWILIO_PARAMS, "Digits": "9999"}),
        ("", "12345", TWILIO_URL, TWILIO_PARAMS),
        (None, "12345", TWILIO_URL, TWILIO_PARAMS),
    ):
        with pytest.raises(AuthFailure):
            check_twilio_signature(signature, token, url, params)


def by_hand(token: str, payload: str) -> str:
    """Twilio's algorithm spelt out: base64 of HMAC-SHA1 over the URL and the sorted parameters."""
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def test_twilio_signature_covers_every_value_of_a_repeated_key() -> None:
    # #14 review 8: the form was a dict, so a repeated key kept only its last value and a real request
    # with repeated keys never verified.
    pairs = [("To", "+18005551212"), ("Tag", "b"), ("CallSid", "CA1"), ("Tag", "a")]
    in_order = by_hand("12345", TWILIO_URL + "CallSidCA1TagbTagaTo+18005551212")
    sdk_order = by_hand("12345", TWILIO_URL + "CallSidCA1TagaTagbTo+18005551212")  # values sorted
    for signature in (in_order, sdk_order):
        check_twilio_signature(signature, "12345", TWILIO_URL, pairs)
    with pytest.raises(AuthFailure):  # a value dropped is a different request
        check_twilio_signature(in_order, "12345", TWILIO_URL, [p for p in pairs if p != ("Tag", "a")])


def test_twilio_signature_with_or_without_the_default_port() -> None:
    # Twilio's own validators try the URL with and without the scheme's default port.
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    check_twilio_signature(TWILIO_SIGNATURE, "12345", with_port, TWILIO_PARAMS)
    signed_with_port = twilio_signature("12345", with_port, TWILIO_PARAMS)
    check_twilio_signature(signed_with_port, "12345", TWILIO_URL, TWILIO_PARAMS)
    with pytest.raises(AuthFailure):  # another port is another URL
        check_twilio_signature(
            TWILIO_SIGNATURE, "12345", "https://mycompany.com:8443/myapp.php?foo=1&bar=2", TWILIO_PARAMS
        )


def test_basic_credentials() -> None:
    check_basic(basic("exotel", "s3cret"), "exotel", "s3cret")
    for header in (None, "Bearer x", basic("exotel", "wrong"), basic("other", "s3cret"), "Basic !!!"):
        with pytest.raises(AuthFailure) as refused:
            check_basic(header, "exotel", "s3cret")
        assert "s3cret" not in str(refused.value) and refused.value.status == 401


def test_token() -> None:
    check_token("a-long-shared-token-1", "a-long-shared-token-1")
    for offered in (None, "", "a-long-shared-token-2"):
        with pytest.raises(AuthFailure):
            check_token(offered, "a-long-shared-token-1")


def test_ip_allow_list_honours_forwarded_for_only_from_trusted_proxies() -> None:
    allowed = ["203.0.113.0/24"]
    check_ip("203.0.113.9", allowed)
    with pytest.raises(AuthFailure) as refused:
        check_ip("198.51.100.1", allowed)
    assert refused.value.status == 403
    proxies = ["10.0.0.0/8"]
    # Through a trusted proxy the forwarded client counts; a client's own spoofed entry further left does not.
    assert client_address("10.1.1.1", "198.51.100.1, 203.0.113.9", proxies) == "203.0.113.9"
    assert client_address("10.1.1.1", "203.0.113.9, 10.2.2.2", proxies) == "203.0.113.9"
    # From anyone else the header is ignored.
    assert client_address("198.51.100.1", "203.0.113.9", proxies) == "198.51.100.1"


def test_stream_tokens_are_per_call_and_expire() -> None:
    tokens = StreamTokens(b"k" * 32, ttl_s=300)
    token = tokens.issue("CA1", now=1000.0)
    tokens.check("CA1", token, now=1200.0)
    for sid, offered, now in (
        ("CA2", token, 1200.0),  # another call
        ("CA1", token, 1301.0),  # expired
        ("CA1", "garbage", 1200.0),
        ("CA1", token.replace(".", ".0"), 1200.0),
    ):
        with pytest.raises(AuthFailure):
            tokens.check(sid, offered, now=now)
    with pytest.raises(AuthFailure):  # another process's key
        StreamTokens(b"x" * 32).check("CA1", token, now=1200.0)


def test_malformed_stream_tokens_are_auth_failures() -> None:
    tokens = StreamTokens(b"k" * 32, ttl_s=300)
    good = tokens.issue("CA1", now=1000.0)
    mac = good.partition(".")[2]
    for offered in (
        "²²²²." + mac,  # "²".isdigit() is true and int() raises
        "1" * 5000 + "." + mac,  # past int()'s 4300-digit limit
        "１３００." + mac,  # full-width digits: int() takes them
        "\udcff." + mac,  # a raw byte aiohttp kept as a surrogate
        good.upper(),
        good + "0",
        "",
        ".",
    ):
        with pytest.raises(AuthFailure):
            tokens.check("CA1", offered, now=1200.0)


def test_a_stream_token_is_redeemed_once_and_forgotten_after_expiry() -> None:
    tokens = StreamTokens(b"k" * 32, ttl_s=300)
    token = tokens.issue("CA1", now=1000.0)
    tokens.redeem("CA1", token, now=1100.0)
    with pytest.raises(AuthFailure, match="already used"):
        tokens.redeem("CA1", token, now=1101.0)
    tokens.check("CA1", token, now=1101.0)  # check alone does not spend it...
    with pytest.raises(AuthFailure, match="already used"):
        tokens.check_unused("CA1", token, now=1101.0)  # ...and the upgrade's check sees it spent
    other = tokens.issue("CA2", now=1400.0)
    tokens.redeem("CA2", other, now=1400.0)  # prunes the expired first token
    assert tokens.remembered == 1


def test_a_stream_token_cannot_be_respelt_for_a_second_use() -> None:
    # #14 review 1: "0" + token named the same expiry and MAC, and redemption was keyed by the spelling.
    tokens = StreamTokens(b"k" * 32, ttl_s=300)
    token = tokens.issue("CA1", now=1000.0)
    tokens.redeem("CA1", token, now=1100.0)
    for respelt in ("0" + token, "00" + token, "000000" + token):
        with pytest.raises(AuthFailure):
            tokens.redeem("CA1", respelt, now=1100.0)
        with pytest.raises(AuthFailure):
            tokens.check_unused("CA1", respelt, now=1100.0)


def test_raw_header_bytes_are_malformed_credentials() -> None:
    # aiohttp decodes header bytes with surrogateescape: b"\xff" arrives as "\udcff".
    with pytest.raises(AuthFailure):
        check_token("\udcff\udcfe", "a-long-shared-token-1")
    with pytest.raises(AuthFailure):
        check_twilio_signature("\udcff=", "12345", TWILIO_URL, TWILIO_PARAMS)
    with pytest.raises(AuthFailure):
        check_basic("Basic \udcff\udcfe", "exotel", "s3cret")


# --- a real daemon -----------------------------------------------------------------------------------

EXOTEL_USER, EXOTEL_PASSWORD = "exotel-hook", "basic-pass-7731"
TWILIO_TOKEN = "twilio-auth-token-0042"
MANAGEMENT_TOKEN = "management-token-5566"


# Every door locked: Exotel on basic auth, Twilio on signatures, management on a token.
LOCKED_DOORS: dict[str, Any] = {
    "prompts": {"greeting": "Hello."},
    "exotel": {
        "webhook_auth": "basic",
        "webhook_username": EXOTEL_USER,
        "webhook_password": EXOTEL_PASSWORD,
    },
    "twilio": {"webhook_auth": "signature", "auth_token": TWILIO_TOKEN},
    "management": {"token": MANAGEMENT_TOKEN},
}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = start_daemon(tmp_path_factory.mktemp("auth"), LOCKED_DOORS)
    yield process
    process.terminate()


async def request(
    method: str, url: str, headers: dict[str, str] | None = None, data: dict[str, str] | None = None
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, data=data, allow_redirects=False) as response,
    ):
        return response.status, await response.text()


@pytest.mark.e2e
async def test_exotel_basic_auth_and_the_stream_token(guarded: DaemonProcess) -> None:
    form = {"CallSid": "CA-auth-1", "From": "+919800000001", "To": "+918000000002"}
    incoming = f"{guarded.http}/webhooks/exotel/incoming"
    assert (await request("POST", incoming, data=form))[0] == 401
    assert (await request("POST", incoming, {"Authorization": basic(EXOTEL_USER, "nope")}, form))[0] == 401
    status, body = await request(
        "POST", incoming, {"Authorization": basic(EXOTEL_USER, EXOTEL_PASSWORD)}, form
    )
    assert status == 200
    url = json.loads(body)["url"]
    assert url.startswith(f"{guarded.ws}/ws/stream/CA-auth-1/")

    # The issued URL works; without its token, or with a forged one, the upgrade is refused.
    async with SimulatedCaller(url, call_sid="CA-auth-1") as caller:
        assert await caller.listen_until_mark(timeout=20) is not None
    for bad in (
        f"{guarded.ws}/ws/stream/CA-auth-1",
        url[:-4] + "beef",
        url.replace("CA-auth-1", "CA-auth-x"),
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await SimulatedCaller(bad, call_sid="CA-auth-1").connect()
        assert refused.value.status == 401

    # A used token is spent: the same URL cannot carry a second stream.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await SimulatedCaller(url, call_sid="CA-auth-1").connect()
    assert refused.value.status == 401

    # A valid token for one call cannot carry another call's stream.
    status, body = await request(
        "POST",
        incoming,
        {"Authorization": basic(EXOTEL_USER, EXOTEL_PASSWORD)},
        {**form, "CallSid": "CA-auth-2"},
    )
    assert status == 200, body
    async with SimulatedCaller(json.loads(body)["url"], call_sid="CA-someone-else") as other:
        await asyncio.wait_for(other.closed.wait(), 10)
        assert other.close_code == 1008 and not other.log.frames


@pytest.mark.e2e
async def test_exotel_static_stream_url_with_basic_credentials(guarded: DaemonProcess) -> None:
    host = guarded.ws.removeprefix("ws://")
    url = f"ws://{EXOTEL_USER}:{EXOTEL_PASSWORD}@{host}/ws/stream"
    async with SimulatedCaller(url, call_sid="CA-auth-static") as caller:
        assert await caller.listen_until_mark(timeout=20) is not None
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await SimulatedCaller(f"ws://{EXOTEL_USER}:wrong@{host}/ws/stream").connect()


@pytest.mark.e2e
async def test_twilio_signature_on_the_webhook(guarded: DaemonProcess) -> None:
    url = f"{guarded.http}/webhooks/twilio/incoming"
    form = {"CallSid": "CA-auth-tw", "From": "+15550000001", "To": "+15550000002"}
    good = twilio_signature(TWILIO_TOKEN, url, form)
    assert (await request("POST", url, {"X-Twilio-Signature": good}, form))[0] == 200
    assert (await request("POST", url, {"X-Twilio-Signature": good}, {**form, "To": "+1555"}))[0] == 401
    assert (await request("POST", url, data=form))[0] == 401


@pytest.mark.e2e
async def test_management_is_loopback_only_unless_the_bearer_token_is_shown(guarded: DaemonProcess) -> None:
    calls = f"{guarded.http}/api/calls/active"
    # With webhook auth on, /api/* takes only the token (a same-host proxy would pass for loopback).
    assert (await request("GET", calls))[0] == 401
    # /health and /metrics too: a same-host proxy that adds no header looks like loopback (#14 review 7).
    assert (await request("GET", f"{guarded.http}/health"))[0] == 401
    assert (await request("GET", f"{guarded.http}/health", {"Authorization": f"Bearer {MANAGEMENT_TOKEN}"}))[
        0
    ] == 200
    forwarded = {"X-Forwarded-For": "198.51.100.7"}  # came through a proxy from elsewhere
    assert (await request("GET", calls, forwarded))[0] == 401
    assert (await request("GET", calls, {**forwarded, "Authorization": "Bearer wrong"}))[0] == 401
    bearer = {**forwarded, "Authorization": f"Bearer {MANAGEMENT_TOKEN}"}
    assert (await request("GET", calls, bearer))[0] == 200
    assert (await request("GET", f"{guarded.http}/metrics", forwarded))[0] == 401
    assert (await request("GET", f"{guarded.http}/live", forwarded))[0] == 200  # probes stay open
    _, metrics = await request(
        "GET", f"{guarded.http}/metrics", {"Authorization": f"Bearer {MANAGEMENT_TOKEN}"}
    )
    assert 'voicebridge_auth_failures_total{reason="wrong basic credentials",surface="exotel"}' in metrics
    log = guarded.log()
    for secret in (EXOTEL_PASSWORD, TWILIO_TOKEN, MANAGEMENT_TOKEN):
        assert secret not in log


@pytest.mark.e2e
async def test_token_and_ip_modes_on_a_daemon(tmp_path: Path) -> None:
    token = "exotel-query-token-123456"
    daemon = start_daemon(
        tmp_path,
        {
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            "exotel": {"webhook_auth": "token", "webhook_token": token},
            "twilio": {"webhook_auth": "ip", "allowed_cidrs": ["203.0.113.0/24"]},
        },
    )
    try:
        status_url = f"{daemon.http}/webhooks/exotel/status"
        form = {"CallSid": "CA-tok", "Status": "completed"}
        assert (await request("POST", status_url, data=form))[0] == 401
        assert (await request("POST", f"{status_url}?token=wrong-token-value-000", data=form))[0] == 401
        assert (await request("POST", f"{status_url}?token={token}", data=form))[0] == 200

        twilio = f"{daemon.http}/webhooks/twilio/incoming"
        form = {"CallSid": "CA-ip", "From": "+15550000001", "To": "+15550000002"}
        # Loopback is not on the allow-list; a forwarded client is, because 127.0.0.1 is a trusted proxy.
        assert (await request("POST", twilio, data=form))[0] == 403
        assert (await request("POST", twilio, {"X-Forwarded-For": "198.51.100.1"}, form))[0] == 403
        assert (await request("POST", twilio, {"X-Forwarded-For": "203.0.113.50"}, form))[0] == 200
    finally:
        daemon.terminate()
