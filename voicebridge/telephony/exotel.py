"""Exotel, the whole provider: the Voicebot applet stream (snake_case JSON, base64 PCM16LE at 8/16/24 kHz
or μ-law at 8 kHz, docs/exotel-stream.md), the Voicebot/Passthru/Status/Recording/Connect webhooks, their
auth (basic, token or ip, as configured) and call control (none needed: closing the stream moves Exotel's
flow on).

`ExotelTranslator` is pure: strings in, strings or events out. Exotel's own side of the stream, played by
the simulator and tests, is `voicebridge.sim.providers.ExotelCaller`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from voicebridge.admission.gate import PendingCall
from voicebridge.audio.chunker import DEFAULT_CHUNK_MS
from voicebridge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.config.schema import Settings
from voicebridge.outbound.status import note_status
from voicebridge.records.callbacks import callback_key, report_key, store_callback, stream_report
from voicebridge.server.bodies import BadInput, request_fields
from voicebridge.server.keys import GATE, METRICS, PLACEMENT, REGISTRY
from voicebridge.telephony.auth import AuthFailure, check_basic, check_ip, check_token
from voicebridge.telephony.base import StreamTranslator, Translator
from voicebridge.telephony.context import call_context, first_values
from voicebridge.telephony.events import Audio, ProtocolViolation, ProviderName, Start, Stop
from voicebridge.telephony.sids import MAX_NUMBER_CHARS
from voicebridge.telephony.webhook_common import (
    checked_call_sid,
    count_webhook,
    dial_stream_url,
    stream_base,
    stream_url,
)
from voicebridge.telephony.wire import payload_bytes, section, sid, start_sids, string_map, text
from voicebridge.telephony.wire import sample_rate as parse_rate

logger = logging.getLogger("voicebridge.webhooks")

EXOTEL_RATES = (8000, 16000, 24000)
# The stream URL's query parameters that are the daemon's own, never the call's context.
EXOTEL_OWN_PARAMETERS = frozenset({"sample-rate"})
# What Exotel itself puts in the query of a dynamic URL request (its documented call fields, lower-cased):
# the rest of the query is what the business wrote on the URL in its flow (`…/incoming?order_id=A17`),
# which is handed on in the stream URL and so becomes the call's context like a static URL's query.
EXOTEL_CALL_FIELDS = frozenset(
    name.lower()
    for name in (
        "CallSid CallFrom CallTo From To Direction Created DialCallDuration DialCallStatus StartTime "
        "CurrentTime EndTime CallType digits RecordingUrl DialWhomNumber CustomField flow_id tenant_id "
        "ForwardedFrom ProcessStatus OutgoingPhoneNumber AccountSid CallStatus"
    ).split()
)


class ExotelTranslator(StreamTranslator):
    """Exotel wire JSON ⇄ internal events for one stream.

    The rate: Exotel documents the Voicebot URL's `sample-rate` query parameter (8000 when absent) and the
    `start` message's `media_format`, but no rule for when they disagree. Our choice: an explicit URL rate
    wins (it is what the operator configured) and a disagreeing start is reported (`Start.rate_note`);
    without one, the start's rate applies (an applet-level media format, from `sample_rate` or a `rate=`
    in the encoding), else 8000. μ-law is 8000 Hz whatever the URL says (docs/exotel-stream.md).
    """

    provider: ProviderName = "exotel"
    sid_key = "stream_sid"
    dtmf_fields = ("digit", "digits")

    def __init__(self, url_rate: int | None = None, url_parameters: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._url_rate = url_rate
        # The stream URL's query: the Voicebot URL's custom parameters, which the start may not repeat.
        self._url_parameters = url_parameters or {}
        self.sample_rate = url_rate or 8000
        self._mulaw = False

    @property
    def outbound_chunk_ms(self) -> int:
        """Exotel wants chunks of at least 3,200 bytes (docs/exotel-stream.md): 200 ms of PCM16 at 8 kHz
        or more, but 400 ms of μ-law, whose samples are one byte."""
        return 2 * DEFAULT_CHUNK_MS if self._mulaw else DEFAULT_CHUNK_MS

    def accept(self, start: Start) -> None:
        """From now on: this start's stream sid in every outbound frame, its encoding and rate both ways."""
        self.stream_sid = start.stream_sid
        self.sample_rate = start.sample_rate
        self._mulaw = start.encoding == "mulaw"

    def _start(self, message: dict[str, Any]) -> Start:
        # Locals only: a start the stream refuses (a duplicate, a bad sid) must leave this stream as it was.
        body = section(message, "start")
        media_format = body.get("media_format") or body.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            media_format = {}
        encoding = text(media_format, "encoding")
        mulaw = names_mulaw(encoding)
        raw_rate = media_format.get("sample_rate", media_format.get("sampleRate"))
        if raw_rate in (None, ""):
            raw_rate = rate_in_encoding(encoding)  # `audio/L16;rate=16000`, the applet's media format
        stated = parse_rate(raw_rate, 0, EXOTEL_RATES) or None
        if mulaw and stated not in (None, 8000):
            raise ProtocolViolation("bad_sample_rate", "μ-law audio must be 8000 Hz")
        rate = 8000 if mulaw else (self._url_rate or stated or 8000)
        announced = stated if stated is not None and stated != rate else None
        note = ""
        if mulaw and self._url_rate not in (None, 8000):
            note = f"the stream URL asks sample-rate={self._url_rate} but start names μ-law, which is 8000 Hz"
        elif announced is not None:
            asks = f"asks sample-rate={self._url_rate}" if self._url_rate else "has no sample-rate"
            note = f"the stream URL {asks}, start says {announced}"
        stream_sid, call_sid = start_sids(
            message, body, ("stream_sid", "streamSid"), ("call_sid", "callSid", "CallSid")
        )
        parameters = string_map(body.get("custom_parameters") or body.get("customParameters"))
        # The URL's first: it is what the operator configured, and Exotel may strip the start's copy.
        context, dropped = call_context((self._url_parameters, parameters), own=EXOTEL_OWN_PARAMETERS)
        return Start(
            provider="exotel",
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=sid(body, "bad_account_sid", "account_sid", "accountSid"),
            from_number=text(body, "from", "From", "call_from", limit=MAX_NUMBER_CHARS),
            to_number=text(body, "to", "To", "call_to", limit=MAX_NUMBER_CHARS),
            sample_rate=rate,
            custom_parameters=parameters,
            context=context,
            context_dropped=dropped,
            encoding="mulaw" if mulaw else "pcm16",
            announced_rate=announced,
            rate_note=f"{note}; using {rate}" if note else "",
        )

    def _stop(self, message: dict[str, Any]) -> Stop:
        stop = message.get("stop")
        return Stop(text(stop, "reason") if isinstance(stop, dict) else "")

    def _media(self, media: dict[str, Any]) -> Audio:
        audio = payload_bytes(media)
        if self._mulaw:
            audio = ulaw_to_pcm16(audio)
        if not audio or len(audio) % 2:
            raise ProtocolViolation("bad_audio", f"PCM16 payload of {len(audio)} bytes")
        return Audio(audio, self.sample_rate)

    def _wire_audio(self, pcm16: bytes) -> bytes:
        # Outbound audio goes at the stream's rate in the stream's encoding (PCM16LE or μ-law).
        return pcm16_to_ulaw(pcm16) if self._mulaw else pcm16


def names_mulaw(encoding: str) -> bool:
    """Whether a `media_format.encoding` names G.711 μ-law, however spelled: `audio/x-mulaw`, `ulaw`,
    `g711_ulaw`, `PCMU`, `μ-law`."""
    compact = re.sub(r"[^a-z0-9]", "", encoding.lower().replace("μ", "u").replace("µ", "u"))
    return "ulaw" in compact or "pcmu" in compact


def rate_in_encoding(encoding: str) -> str | None:
    """The `rate=` parameter of a MIME-style encoding (`audio/L16;rate=16000`), None when it has none."""
    found = re.search(r";\s*rate\s*=\s*([^;\s]{1,16})", encoding, flags=re.IGNORECASE)
    return found.group(1) if found else None


# --- webhooks ------------------------------------------------------------------------------------------


async def exotel_incoming(request: web.Request) -> web.Response:
    """Voicebot applet's dynamic URL: remember the call and answer with its stream URL."""
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, "exotel_incoming")
    base = stream_base(request)
    if (dialled := dial_stream_url(request, base, call_sid)) is not None:
        count_webhook(request, "exotel_incoming", "ok")
        return web.json_response({"url": dialled})
    gate = request.app[GATE]
    if (reason := await gate.denied(call_sid)) is not None:
        count_webhook(request, "exotel_incoming", "denied")
        raise web.HTTPForbidden(text=f"call refused: {reason}")
    await gate.register_pending(
        PendingCall(
            call_sid,
            fields.get("From") or fields.get("CallFrom", ""),
            fields.get("To") or fields.get("CallTo", ""),
        )
    )
    query = {"sample-rate": fields["sample-rate"]} if "sample-rate" in fields else {}
    query.update(flow_parameters(request))
    count_webhook(request, "exotel_incoming", "ok")
    return web.json_response({"url": await stream_url(request, call_sid, query)})


def flow_parameters(request: web.Request) -> dict[str, str]:
    """The business's own parameters on the dynamic URL, bounded as a context is; a parameter that could
    not be context is left out here, counted and named in one log line (its value never)."""
    written = {
        key: value
        for key, value in first_values(request.query.items()).items()
        if key.lower() not in EXOTEL_CALL_FIELDS
    }
    context, dropped = call_context((written,), own=EXOTEL_OWN_PARAMETERS | {"token"})
    if dropped:
        metrics = request.app[METRICS]
        for reason, _ in dropped:
            metrics.context_dropped.labels(reason=reason).inc()
        logger.warning(
            "exotel dynamic URL: parameters left out of the call's context: %s",
            ", ".join(f"{key} ({reason})" for reason, key in dropped),
        )
    return dict(context)


async def exotel_passthru(request: web.Request) -> web.Response:
    """Before the Voicebot applet, the gate: 200 proceeds to the bot, 302 takes the flow's other path.
    After it, a report of the finished stream: stored durably and answered 200, whatever the load."""
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, "exotel_passthru", required=False)
    report = stream_report(fields)
    if report is not None:
        if not call_sid:
            count_webhook(request, "exotel_passthru", "bad_request")
            raise BadInput("no_call_sid")
        # Draining, at capacity or overloaded changes nothing here: the call has already been served.
        await store_callback(
            request, "exotel_passthru", "passthru", call_sid, report_key(call_sid, report), fields
        )
        return web.Response(status=200, text="ok")
    # Another node may have room when this one has none: the stream is placed there (cluster/placement.py).
    if reason := await request.app[PLACEMENT].refusal():
        request.app[METRICS].calls_rejected.labels(reason=reason).inc()
        logger.warning(
            "passthru refused %s: %s", call_sid or "?", reason, extra={"call_sid": call_sid or "-"}
        )
        count_webhook(request, "exotel_passthru", reason)
        return web.Response(status=302, text=reason)
    from_number = fields.get("From") or fields.get("CallFrom", "")
    to_number = fields.get("To") or fields.get("CallTo", "")
    if call_sid and (reason := await request.app[GATE].check(call_sid, from_number, to_number, "exotel")):
        count_webhook(request, "exotel_passthru", "denied")
        return web.Response(status=302, text=reason)
    count_webhook(request, "exotel_passthru", "ok")
    return web.Response(status=200, text="ok")


async def _callback(request: web.Request, kind: str) -> web.Response:
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, f"exotel_{kind}")
    # Stored durably before Exotel hears 200; the key makes its retries the same record.
    key = callback_key(call_sid, kind, fields)
    stored = await store_callback(request, f"exotel_{kind}", kind, call_sid, key, fields)
    if kind == "status":
        note_status(request.app, "exotel", call_sid, fields)  # a dialled call's end (outbound/status.py)
    return web.json_response({"ok": True, "duplicate": not stored})


async def exotel_status(request: web.Request) -> web.Response:
    """StatusCallback: stored once per CallSid and status, however often Exotel retries."""
    return await _callback(request, "status")


async def exotel_recording(request: web.Request) -> web.Response:
    """Recording callback: the recording URL is kept on the call."""
    return await _callback(request, "recording")


async def exotel_transfer(request: web.Request) -> web.Response:
    """Connect applet's dynamic URL: where to dial for a call we transferred."""
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, "exotel_transfer", required=False)
    number = request.app[REGISTRY].facts.transfer_destination(call_sid)
    if number is None:
        count_webhook(request, "exotel_transfer", "unknown")
        return web.json_response({"error": f"no transfer requested for call {call_sid or '?'}"}, status=404)
    count_webhook(request, "exotel_transfer", "ok")
    return web.json_response(
        {
            "fetch_after_attempt": False,
            "destination": {"numbers": [number]},
            "record": True,
            "recording_channels": "dual",
            "max_ringing_duration": 45,
            "max_conversation_duration": 3600,
            "music_on_hold": {"type": "operator_tone"},
        }
    )


# --- the provider --------------------------------------------------------------------------------------


class ExotelProvider:
    """Exotel as the daemon uses it (the `Provider` Protocol of telephony/base.py)."""

    name: ProviderName = "exotel"

    def enabled(self, settings: Settings) -> bool:
        return settings.exotel.enabled

    def claims_start(self, message: dict[str, Any]) -> bool:
        # Exotel's start is the documented default and its spellings vary (snake_case, camelCase, numbers
        # as strings or ints): it takes any start no other provider claims, so it is listed last.
        return True

    def translator(self, url_rate: int | None, url_parameters: Mapping[str, str] | None = None) -> Translator:
        return ExotelTranslator(url_rate, url_parameters)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/webhooks/exotel/incoming", exotel_incoming)
        app.router.add_route("*", "/webhooks/exotel/passthru", exotel_passthru)
        app.router.add_post("/webhooks/exotel/status", exotel_status)
        app.router.add_post("/webhooks/exotel/recording", exotel_recording)
        app.router.add_get("/webhooks/exotel/transfer", exotel_transfer)

    async def check_webhook(self, request: web.Request, settings: Settings, address: str) -> None:
        exotel = settings.exotel
        if exotel.webhook_auth == "basic":
            _check_basic(request, settings)
        elif exotel.webhook_auth == "token":
            offered = request.query.get("token") or request.headers.get("X-Voicebridge-Token")
            check_token(offered, exotel.webhook_token.get_secret_value())
        elif exotel.webhook_auth == "ip":
            check_ip(address, exotel.allowed_cidrs)

    def check_stream(self, request: web.Request, settings: Settings, address: str) -> None:
        exotel = settings.exotel
        if exotel.webhook_auth == "basic":
            # A static Voicebot URL (https://user:pass@host/ws/stream) sends the same basic credentials.
            _check_basic(request, settings)
        elif exotel.webhook_auth == "ip":
            check_ip(address, exotel.allowed_cidrs)
        else:
            # Token (and no) auth has never admitted a stream without its per-call token.
            raise AuthFailure(f"exotel webhook_auth {exotel.webhook_auth!r} does not cover streams")

    async def hang_up(self, start: Start, settings: Settings) -> bool:
        # Closing the stream moves Exotel's flow on: nothing to ask the provider.
        return True

    async def transfer(self, start: Start, number: str, settings: Settings) -> bool:
        # Exotel's Connect applet asks our transfer webhook (exotel_transfer) where to dial.
        return True


def _check_basic(request: web.Request, settings: Settings) -> None:
    exotel = settings.exotel
    check_basic(
        request.headers.get("Authorization"),
        exotel.webhook_username,
        exotel.webhook_password.get_secret_value(),
    )


EXOTEL = ExotelProvider()
