"""Twilio, the whole provider: Media Streams (camelCase JSON, base64 μ-law at 8 kHz, docs/twilio-stream.md),
the incoming-call webhook answering TwiML, its auth (X-Twilio-Signature or ip, as configured) and call
control over Twilio's REST API (hangup, transfer).

`TwilioTranslator` is pure. Twilio's own side of the stream, played by the simulator and tests, is
`voicebridge.sim.providers.TwilioCaller`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

import aiohttp
from aiohttp import web

from voicebridge.admission.gate import PendingCall
from voicebridge.audio.chunker import DEFAULT_CHUNK_MS
from voicebridge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.config.schema import Settings, TwilioConfig
from voicebridge.server.bodies import FORM, parsed_body, request_fields
from voicebridge.server.keys import GATE, METRICS, PLACEMENT, SETTINGS
from voicebridge.telephony.auth import AuthFailure, check_ip, credential_bytes
from voicebridge.telephony.base import StreamTranslator, Translator
from voicebridge.telephony.context import call_context
from voicebridge.telephony.events import Audio, ProtocolViolation, ProviderName, Start, Stop, UnknownEvent
from voicebridge.telephony.sids import MAX_NUMBER_CHARS, path_segment
from voicebridge.telephony.twilio_status import twilio_status
from voicebridge.telephony.webhook_common import checked_call_sid, count_webhook, stream_url
from voicebridge.telephony.wire import payload_bytes, section, sid, start_sids, string_map, text

logger = logging.getLogger("voicebridge.telephony")

TWILIO_RATE = 8000
# The <Parameter>s our own TwiML adds (twilio_incoming): the call's numbers and sid, never its context.
TWILIO_OWN_PARAMETERS = frozenset({"From", "To", "CallSid", "from", "to"})


class TwilioTranslator(StreamTranslator):
    """Twilio wire JSON ⇄ internal events for one stream."""

    provider: ProviderName = "twilio"
    sample_rate = TWILIO_RATE
    sid_key = "streamSid"
    # Twilio states no minimum chunk; 200 ms keeps what a barge-in `clear` discards small.
    outbound_chunk_ms = DEFAULT_CHUNK_MS

    def accept(self, start: Start) -> None:
        """From now on: this start's stream sid in every outbound frame."""
        self.stream_sid = start.stream_sid

    def _start(self, message: dict[str, Any]) -> Start:
        # Locals only: a start the stream refuses must leave this stream as it was.
        body = section(message, "start")
        media_format = body.get("mediaFormat") if isinstance(body.get("mediaFormat"), dict) else {}
        encoding = text(media_format, "encoding", default="audio/x-mulaw").lower()
        if "mulaw" not in encoding:
            raise ProtocolViolation("bad_audio", f"unsupported Twilio encoding {encoding[:40]!r}")
        rate = text(media_format, "sampleRate", default=str(TWILIO_RATE))
        if rate != str(TWILIO_RATE):
            raise ProtocolViolation("bad_sample_rate", f"Twilio streams are 8000 Hz, got {rate[:20]!r}")
        stream_sid, call_sid = start_sids(message, body, ("streamSid", "stream_sid"), ("callSid", "call_sid"))
        parameters = string_map(body.get("customParameters"))
        from_number = parameters.get("From", parameters.get("from", ""))
        to_number = parameters.get("To", parameters.get("to", ""))
        if len(from_number) > MAX_NUMBER_CHARS or len(to_number) > MAX_NUMBER_CHARS:
            raise ProtocolViolation("field_too_long", "a From/To parameter longer than a phone number")
        # Twilio allows no query string on a stream URL: the <Parameter>s are the only source.
        context, dropped = call_context((parameters,), own=TWILIO_OWN_PARAMETERS)
        return Start(
            provider="twilio",
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=sid(body, "bad_account_sid", "accountSid", "account_sid"),
            # Twilio's start has no numbers; our TwiML passes them as <Parameter>s.
            from_number=from_number,
            to_number=to_number,
            sample_rate=TWILIO_RATE,
            custom_parameters=parameters,
            context=context,
            context_dropped=dropped,
            encoding="mulaw",
        )

    def _media(self, media: dict[str, Any]) -> Audio:
        track = text(media, "track", default="inbound")
        if track not in ("inbound", "inbound_track"):
            raise UnknownEvent("ignored_track", f"media on track {track!r}")
        audio = payload_bytes(media)
        if not audio:
            raise ProtocolViolation("bad_audio", "empty payload")
        return Audio(ulaw_to_pcm16(audio), TWILIO_RATE)

    def _stop(self, message: dict[str, Any]) -> Stop:
        return Stop("stopped")

    def _wire_audio(self, pcm16: bytes) -> bytes:
        # Outbound audio: PCM16 at 8 kHz, sent as μ-law.
        return pcm16_to_ulaw(pcm16)


def is_twilio_start(message: dict[str, Any]) -> bool:
    """Twilio's start is camelCase (`streamSid`, `callSid`, `mediaFormat`) and carries μ-law."""
    start = message.get("start")
    body = start if isinstance(start, dict) else {}
    if "mediaFormat" in body:
        encoding = body["mediaFormat"].get("encoding", "") if isinstance(body["mediaFormat"], dict) else ""
        return "mulaw" in str(encoding).lower()
    return "callSid" in body and "call_sid" not in body and "tracks" in body


# --- webhook -------------------------------------------------------------------------------------------


async def twilio_incoming(request: web.Request) -> web.Response:
    """Twilio voice webhook: TwiML that connects the call's audio to our stream."""
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, "twilio_incoming", required=False)
    if (refusal := await request.app[PLACEMENT].refusal()) or not call_sid:
        if refusal:
            request.app[METRICS].calls_rejected.labels(reason=refusal).inc()
        count_webhook(request, "twilio_incoming", "busy" if call_sid else "bad_request")
        busy = request.app[SETTINGS].prompts.busy
        twiml = f"<Response><Say>{escape(busy)}</Say><Hangup/></Response>"
        return web.Response(text=_xml(twiml), content_type="text/xml")
    from_number, to_number = fields.get("From", ""), fields.get("To", "")
    if await request.app[GATE].check(call_sid, from_number, to_number, "twilio"):
        count_webhook(request, "twilio_incoming", "denied")
        return web.Response(
            text=_xml('<Response><Reject reason="rejected"/></Response>'), content_type="text/xml"
        )
    await request.app[GATE].register_pending(PendingCall(call_sid, from_number, to_number, provider="twilio"))
    parameters = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>"
        for name, value in (("From", from_number), ("To", to_number), ("CallSid", call_sid))
    )
    url = await stream_url(request, call_sid, {})
    twiml = f"<Response><Connect><Stream url={quoteattr(url)}>{parameters}</Stream></Connect></Response>"
    count_webhook(request, "twilio_incoming", "ok")
    return web.Response(text=_xml(twiml), content_type="text/xml")


def _xml(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>{body}'


# --- webhook auth: X-Twilio-Signature -----------------------------------------------------------------


# Form parameters as sent: a mapping, or (name, value) pairs in order when a name may repeat.
FormParams = Mapping[str, str] | Sequence[tuple[str, str]]
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def _grouped(params: FormParams) -> dict[str, list[str]]:
    pairs = params.items() if isinstance(params, Mapping) else params
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def _payload(url: str, grouped: dict[str, list[str]], sdk_order: bool) -> str:
    return url + "".join(
        name + value
        for name in sorted(grouped)
        for value in (sorted(set(grouped[name])) if sdk_order else grouped[name])
    )


def twilio_signature(auth_token: str, url: str, params: FormParams) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 over the URL and the params sorted by name, each name
    followed by its value (every value of a repeated name, in the order sent)."""
    return _sign(auth_token, _payload(url, _grouped(params), sdk_order=False))


def _sign(auth_token: str, payload: str) -> str:
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """`url`, and the same with the scheme's default port added or removed: Twilio's own validators accept
    either, since what Twilio signs depends on how the URL was configured."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return [url]
    if default is None or not parts.hostname:
        return [url]
    if port is None:
        return [url, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}"))]
    if port == default:
        return [url, urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))]
    return [url]


def check_twilio_signature(signature: str | None, auth_token: str, url: str, params: FormParams) -> None:
    """Verify X-Twilio-Signature in constant time against each way Twilio may have signed this request:
    the URL with or without its default port, a repeated name's values in order or sorted (as Twilio's
    SDKs compute them)."""
    if not signature:
        raise AuthFailure("no signature")
    offered = credential_bytes(signature, "signature")
    grouped = _grouped(params)
    payloads = {
        _payload(variant, grouped, order) for variant in _url_variants(url) for order in (False, True)
    }
    matched = False
    for payload in sorted(payloads):
        matched |= hmac.compare_digest(offered, _sign(auth_token, payload).encode())
    if not matched:
        raise AuthFailure("bad signature")


def signed_url(request: web.Request, settings: Settings, websocket: bool = False) -> str:
    """The URL the provider called, as it saw it (public_url when set; for a stream, node_url when set:
    the webhook handed out a stream URL on this node's own address): what Twilio signs."""
    public = settings.server.public_url.rstrip("/")
    if websocket and settings.server.node_url:
        return settings.server.node_url + request.path_qs
    if not public:
        try:
            seen = str(request.url)
        except ValueError:  # a Host header that is no host
            raise AuthFailure("malformed host") from None
        # aiohttp names an upgrade's URL http(s)://; Twilio signs the ws(s):// URL it connected to.
        return seen.replace("https://", "wss://", 1).replace("http://", "ws://", 1) if websocket else seen
    if websocket:
        public = public.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return public + request.path_qs


# --- call control: Twilio's REST API --------------------------------------------------------------------

REST_TIMEOUT = aiohttp.ClientTimeout(total=5)
# Twilio account sids: "AC" and 32 hex digits. The REST request carries our auth_token, so an account sid
# from the wire (the stream's `start`) must name an account, never a path of the caller's choosing.
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")


async def update_call(twilio: TwilioConfig, start: Start, form: dict[str, str]) -> bool:
    """POST `form` to the call's REST resource (Calls/<sid>.json); True when Twilio took it or says the
    call already ended."""
    token = twilio.auth_token.get_secret_value()
    account = twilio.account_sid or start.account_sid
    log = logging.LoggerAdapter(logger, {"call_sid": start.call_sid})
    if not (account and token):
        log.warning("twilio account_sid/auth_token not configured: closing the stream only")
        return False
    if not ACCOUNT_SID.fullmatch(account):
        log.warning("twilio account sid is not AC + 32 hex digits: no REST request, closing the stream only")
        return False
    url = (
        f"{twilio.api_base.rstrip('/')}/2010-04-01/Accounts/{path_segment(account)}"
        f"/Calls/{path_segment(start.call_sid)}.json"
    )
    try:
        async with (
            aiohttp.ClientSession(timeout=REST_TIMEOUT) as session,
            session.post(
                url, data=form, headers={"Authorization": aiohttp.encode_basic_auth(account, token)}
            ) as response,
        ):
            if response.status == 404:
                log.info("twilio says the call already ended")
                return True
            if response.status >= 400:
                log.warning("twilio call update failed: HTTP %d", response.status)
                return False
            return True
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("twilio call update failed: %s", type(exc).__name__)
        return False


# --- the provider --------------------------------------------------------------------------------------


class TwilioProvider:
    """Twilio as the daemon uses it (the `Provider` Protocol of telephony/base.py)."""

    name: ProviderName = "twilio"

    def enabled(self, settings: Settings) -> bool:
        return settings.twilio.enabled

    def claims_start(self, message: dict[str, Any]) -> bool:
        return is_twilio_start(message)

    def translator(self, url_rate: int | None, url_parameters: Mapping[str, str] | None = None) -> Translator:
        # Twilio streams are μ-law at 8 kHz whatever a URL says, and their URLs carry no query.
        return TwilioTranslator()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/twilio/incoming", twilio_incoming)
        app.router.add_post("/webhooks/twilio/status", twilio_status)

    async def check_webhook(self, request: web.Request, settings: Settings, address: str) -> None:
        twilio = settings.twilio
        if twilio.webhook_auth == "signature":
            # Parsed once and kept on the request: the handler reads the same fields after this check.
            body = await parsed_body(request)
            if body.kind not in ("none", "form"):
                # The signature covers form parameters only; any other body would be unauthenticated.
                raise AuthFailure(f"signed webhooks must be {FORM}")
            check_twilio_signature(
                request.headers.get("X-Twilio-Signature"),
                twilio.auth_token.get_secret_value(),
                signed_url(request, settings),
                body.pairs,
            )
        elif twilio.webhook_auth == "ip":
            check_ip(address, twilio.allowed_cidrs)

    def check_stream(self, request: web.Request, settings: Settings, address: str) -> None:
        twilio = settings.twilio
        if twilio.webhook_auth == "signature":
            # Twilio signs the upgrade too: over the ws(s):// URL, with no parameters.
            check_twilio_signature(
                request.headers.get("X-Twilio-Signature"),
                twilio.auth_token.get_secret_value(),
                signed_url(request, settings, websocket=True),
                {},
            )
        elif twilio.webhook_auth == "ip":
            check_ip(address, twilio.allowed_cidrs)
        else:
            raise AuthFailure(f"twilio webhook_auth {twilio.webhook_auth!r} does not cover streams")

    async def hang_up(self, start: Start, settings: Settings) -> bool:
        return await update_call(settings.twilio, start, {"Status": "completed"})

    async def transfer(self, start: Start, number: str, settings: Settings) -> bool:
        twiml = f"<Response><Dial>{escape(number)}</Dial></Response>"
        return await update_call(settings.twilio, start, {"Twiml": twiml})


TWILIO = TwilioProvider()
