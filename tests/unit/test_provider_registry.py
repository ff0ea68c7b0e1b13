"""The provider registry and the door, in-process: a disabled provider has no routes, the door asks the
providers, and a test-only provider registers through the same path as the built-in ones
(docs/adding-a-provider.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, Field, SecretStr, ValidationError

from voicebridge.admission.registry import CallRegistry
from voicebridge.cluster.placement import LocalPlacement
from voicebridge.config.schema import Settings
from voicebridge.config.section import ProviderSection
from voicebridge.doctor.config import check_authentication
from voicebridge.server.access import access_door, surface_of
from voicebridge.server.bodies import request_fields
from voicebridge.server.keys import METRICS, PLACEMENT, SETTINGS, STREAM_TOKENS
from voicebridge.server.metrics import Metrics
from voicebridge.telephony import providers
from voicebridge.telephony.auth import AuthFailure
from voicebridge.telephony.base import Provider, StreamTranslator, Translator
from voicebridge.telephony.events import Audio, ProviderName, Start, Stop
from voicebridge.telephony.providers import PROVIDERS, TelephonyControl, translator_for_start
from voicebridge.telephony.stream_tokens import StreamTokens
from voicebridge.telephony.webhook_common import checked_call_sid, stream_url
from voicebridge.telephony.wire import payload_bytes, section, start_sids

ACME_KEY = b"acme-signing-key"
# Exotel with auth on: not the quick start's open mode, so every door checks.
GUARDED = {"exotel": {"webhook_auth": "token", "webhook_token": "exotel-token-0123456789"}}


# --- a minimal provider, as docs/adding-a-provider.md describes one ------------------------------------


class AcmeTranslator(StreamTranslator):
    """Acme's stream: camelCase `streamId`, PCM16 at 8 kHz both ways."""

    provider: ProviderName = "acme"
    sample_rate = 8000
    outbound_chunk_ms = 200
    sid_key = "streamId"

    def accept(self, start: Start) -> None:
        self.stream_sid = start.stream_sid

    def _start(self, message: dict[str, Any]) -> Start:
        body = section(message, "acme")
        stream_sid, call_sid = start_sids(message, body, ("streamId",), ("callId",))
        return Start(provider="acme", stream_sid=stream_sid, call_sid=call_sid, sample_rate=8000)

    def _media(self, media: dict[str, Any]) -> Audio:
        return Audio(payload_bytes(media), 8000)

    def _stop(self, message: dict[str, Any]) -> Stop:
        return Stop("acme stopped")

    def _wire_audio(self, pcm16: bytes) -> bytes:
        return pcm16


async def acme_incoming(request: web.Request) -> web.Response:
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, "acme_incoming")
    return web.json_response({"url": await stream_url(request, call_sid, {})})


class AcmeProvider:
    """Its settings are its own here; a real provider reads its section of config/schema.py."""

    name: ProviderName = "acme"

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled
        self.hung_up: list[str] = []

    def enabled(self, settings: Settings) -> bool:
        return self._enabled

    def claims_start(self, message: dict[str, Any]) -> bool:
        return isinstance(message.get("acme"), dict)

    def translator(self, url_rate: int | None, url_parameters: Mapping[str, str] | None = None) -> Translator:
        return AcmeTranslator()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/acme/incoming", acme_incoming)

    async def check_webhook(self, request: web.Request, settings: Settings, address: str) -> None:
        body = await request.read()
        expected = hmac.new(ACME_KEY, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Acme-Signature", "").encode(), expected.encode()):
            raise AuthFailure("bad acme signature")

    def check_stream(self, request: web.Request, settings: Settings, address: str) -> None:
        raise AuthFailure("acme streams need their token")

    async def hang_up(self, start: Start, settings: Settings) -> bool:
        self.hung_up.append(start.call_sid)
        return True

    async def transfer(self, start: Start, number: str, settings: Settings) -> bool:
        return True


def acme_sign(body: bytes) -> str:
    return hmac.new(ACME_KEY, body, hashlib.sha256).hexdigest()


def door_app(settings: Settings, registered: Sequence[Provider]) -> web.Application:
    """The daemon's door and webhook routes for these providers, without the rest of the daemon."""
    app = web.Application(middlewares=[access_door(registered)])
    app[SETTINGS], app[METRICS], app[STREAM_TOKENS] = settings, Metrics(), StreamTokens()
    app[PLACEMENT] = LocalPlacement(CallRegistry(4))
    providers.add_routes(app, registered)
    return app


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        settings: Settings, registered: Sequence[Provider]
    ) -> TestClient[web.Request, web.Application]:
        client = TestClient(TestServer(door_app(settings, registered)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def webhook_paths(app: web.Application) -> set[str]:
    return {
        resource.canonical
        for resource in app.router.resources()
        if resource.canonical.startswith("/webhooks/")
    }


# --- the built-in providers -------------------------------------------------------------------------------


def test_a_disabled_provider_registers_no_routes() -> None:
    both = webhook_paths(door_app(Settings(), PROVIDERS))
    assert "/webhooks/twilio/incoming" in both and "/webhooks/exotel/incoming" in both
    no_twilio = webhook_paths(door_app(Settings(twilio={"enabled": False}), PROVIDERS))
    assert no_twilio and not any(path.startswith("/webhooks/twilio/") for path in no_twilio)
    no_exotel = webhook_paths(door_app(Settings(exotel={"enabled": False}), PROVIDERS))
    assert no_exotel == {"/webhooks/twilio/incoming", "/webhooks/twilio/status"}


async def test_a_disabled_providers_door_is_a_404_before_any_auth(client_for: Any) -> None:
    client = await client_for(Settings(**GUARDED, twilio={"enabled": False}), PROVIDERS)
    response = await client.post("/webhooks/twilio/incoming", data={"CallSid": "CA1"})
    assert response.status == 404
    # The enabled provider's door still asks for its credentials.
    response = await client.post("/webhooks/exotel/incoming", data={"CallSid": "CA1"})
    assert response.status == 401


def test_surfaces_are_named_by_the_providers() -> None:
    assert surface_of("/webhooks/twilio/incoming") == "twilio"
    assert surface_of("/webhooks/exotel/passthru") == "exotel"
    assert surface_of("/webhooks/acme/incoming") == "webhooks"
    assert surface_of("/webhooks/acme/incoming", (AcmeProvider(), *PROVIDERS)) == "acme"
    assert surface_of("/ws/stream/CA1") == "stream"


# --- a test-only provider through the same path ----------------------------------------------------------


async def test_a_new_provider_gets_routes_and_its_own_webhook_check(client_for: Any) -> None:
    client = await client_for(Settings(**GUARDED), (AcmeProvider(), *PROVIDERS))
    body = b"CallSid=CA-acme-1"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post("/webhooks/acme/incoming", data=body, headers=headers)
    assert response.status == 401 and await response.text() == "bad acme signature"
    signed = {**headers, "X-Acme-Signature": acme_sign(body)}
    response = await client.post("/webhooks/acme/incoming", data=body, headers=signed)
    assert response.status == 200
    url = (await response.json())["url"]
    # The shared stream URL: the call's path segment and its per-call token.
    assert "/ws/stream/CA-acme-1/" in url


async def test_a_disabled_new_provider_has_no_routes_and_no_door(client_for: Any) -> None:
    registered = (AcmeProvider(enabled=False), *PROVIDERS)
    assert not any(
        path.startswith("/webhooks/acme/") for path in webhook_paths(door_app(Settings(), registered))
    )
    client = await client_for(Settings(**GUARDED), registered)
    body = b"CallSid=CA-acme-2"
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Acme-Signature": acme_sign(body)}
    response = await client.post("/webhooks/acme/incoming", data=body, headers=headers)
    assert response.status == 404


def test_a_new_providers_translator_round_trips() -> None:
    registered = (AcmeProvider(), *PROVIDERS)
    start_message = {"event": "start", "streamId": "MZ-acme", "acme": {"callId": "CA-acme"}}
    translator = translator_for_start(start_message, None, registered)
    assert isinstance(translator, AcmeTranslator)
    start = translator.parse(start_message)
    assert start == Start(provider="acme", stream_sid="MZ-acme", call_sid="CA-acme", sample_rate=8000)
    translator.accept(start)
    pcm = bytes(range(64))
    outbound = json.loads(translator.media(pcm))
    assert outbound["streamId"] == "MZ-acme" and base64.b64decode(outbound["media"]["payload"]) == pcm
    inbound = {"event": "media", "media": {"payload": outbound["media"]["payload"]}}
    assert translator.parse(inbound) == Audio(pcm, 8000)
    assert json.loads(translator.mark("m1")) == {
        "event": "mark",
        "streamId": "MZ-acme",
        "mark": {"name": "m1"},
    }
    # The built-in providers still get their starts.
    assert (
        translator_for_start({"event": "start", "start": {"call_sid": "CA1"}}, None, registered).provider
        == "exotel"
    )


async def test_call_control_goes_to_the_calls_provider() -> None:
    acme = AcmeProvider()
    control = TelephonyControl(Settings(), (acme, *PROVIDERS))
    assert await control.hang_up(Start(provider="acme", stream_sid="MZ1", call_sid="CA-acme-3"))
    assert acme.hung_up == ["CA-acme-3"]
    # Exotel needs nothing from its API: closing the stream moves its flow on.
    assert await control.hang_up(Start(provider="exotel", stream_sid="MZ1", call_sid="CA-ex"))


# --- the config side: provider sections are found by type, and a forgotten one fails closed ---------------


class AcmeConfig(ProviderSection):
    webhook_auth: Literal["none", "signature"] = "none"
    signing_key: SecretStr = SecretStr("")


class AcmeSettings(Settings):
    """Settings with one more provider: its section class and one field, as docs/adding-a-provider.md says."""

    acme: AcmeConfig = Field(default_factory=AcmeConfig)


def test_every_registered_provider_has_its_section_and_follows_it() -> None:
    # Were a provider's section missing, the rules below would not see it: open mode while it checks auth.
    sections = Settings().provider_sections()
    assert set(sections) == {provider.name for provider in PROVIDERS}
    for provider in PROVIDERS:
        assert provider.enabled(Settings()) and Settings().provider_enabled(provider.name)
        disabled = Settings(**{provider.name: {"enabled": False}})
        assert not provider.enabled(disabled) and not disabled.provider_enabled(provider.name)


def test_every_section_with_webhook_auth_is_a_provider_section() -> None:
    # A provider section written as a plain Section would be missed by provider_sections(): fail open.
    for name, part in Settings():
        if not isinstance(part, BaseModel):  # [numbers]: a table of numbers, not a section
            continue
        if "webhook_auth" in type(part).model_fields or "enabled" in type(part).model_fields:
            assert isinstance(part, ProviderSection), name


def test_a_provider_section_without_its_modes_does_not_load() -> None:
    class Forgetful(ProviderSection):
        api_base: str = ""

    with pytest.raises(ValidationError, match="webhook_auth"):
        Forgetful()


def test_a_name_with_no_provider_section_is_not_enabled() -> None:
    assert not Settings().provider_enabled("acme") and not Settings().provider_enabled("server")


def test_a_new_provider_section_joins_every_auth_rule() -> None:
    assert set(AcmeSettings().provider_sections()) == {"exotel", "twilio", "acme"}
    assert AcmeSettings().provider_enabled("acme") and AcmeSettings().open_mode
    signed = {"webhook_auth": "signature", "signing_key": "k" * 20}
    assert not AcmeSettings(acme=signed).open_mode
    assert AcmeSettings(acme=signed).management_api_needs_token
    assert AcmeSettings(acme={**signed, "enabled": False}).open_mode  # disabled counts for nothing
    # Exposed with Acme open: refused at start-up, naming Acme's key.
    others = {"webhook_auth": "ip", "allowed_cidrs": ["203.0.113.0/24"]}
    with pytest.raises(ValidationError, match=r"acme\.webhook_auth is 'none'"):
        AcmeSettings(server={"host": "0.0.0.0"}, exotel=others, twilio=others)
    assert not AcmeSettings(server={"host": "0.0.0.0"}, exotel=others, twilio=others, acme=signed).open_mode
    check = check_authentication(AcmeSettings(acme=signed))
    assert check.status == "warn" and "acme signature" in check.detail, check
