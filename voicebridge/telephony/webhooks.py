"""Provider webhooks: Exotel's Voicebot/Passthru/Status/Recording/Connect URLs and Twilio's incoming call."""

from __future__ import annotations

import logging
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from voicebridge.admission.gate import PendingCall
from voicebridge.records.callbacks import callback_key, report_key, store_callback, stream_report
from voicebridge.server.bodies import BadInput, request_fields
from voicebridge.server.keys import GATE, METRICS, REGISTRY, SETTINGS, STREAM_TOKENS
from voicebridge.telephony.sids import is_valid_host, is_valid_sid, path_segment

logger = logging.getLogger("voicebridge.webhooks")


def checked_call_sid(
    request: web.Request, fields: dict[str, str], endpoint: str, required: bool = True
) -> str:
    """The CallSid field, of the providers' shape; a bad one is a counted 400 (it would key records and
    backend URLs)."""
    call_sid = fields.get("CallSid", "")
    if not call_sid and not required:
        return ""
    if not call_sid:
        _count(request, endpoint, "bad_request")
        raise BadInput("no_call_sid")
    if not is_valid_sid(call_sid):
        _count(request, endpoint, "bad_call_sid")
        raise BadInput("bad_call_sid")
    return call_sid


def stream_base(request: web.Request) -> str:
    """Where our audio socket is reached: `server.public_url`, else the Host the request named. The Host is
    the client's to choose, so it must at least be a host: it goes into the URL we hand out."""
    public = request.app[SETTINGS].server.public_url.rstrip("/")
    if public:
        return public.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    if not is_valid_host(request.host):
        raise BadInput("bad_host")
    return f"{'wss' if request.secure else 'ws'}://{request.host}"


def stream_url(request: web.Request, base: str, call_sid: str, query: dict[str, str]) -> str:
    """The wss:// URL of our audio socket for one call (`base` from `stream_base`)."""
    suffix = f"?{urlencode(query)}" if query else ""
    # The token goes in the path: Twilio allows no query string on stream URLs.
    token = "" if request.app[SETTINGS].open_mode else f"/{request.app[STREAM_TOKENS].issue(call_sid)}"
    return f"{base}/ws/stream/{path_segment(call_sid)}{token}{suffix}"


def _count(request: web.Request, endpoint: str, result: str) -> None:
    request.app[METRICS].webhooks.labels(endpoint=endpoint, result=result).inc()


async def exotel_incoming(request: web.Request) -> web.Response:
    """Voicebot applet's dynamic URL: remember the call and answer with its stream URL."""
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, "exotel_incoming")
    base = stream_base(request)
    gate = request.app[GATE]
    if (reason := gate.denied(call_sid)) is not None:
        _count(request, "exotel_incoming", "denied")
        raise web.HTTPForbidden(text=f"call refused: {reason}")
    gate.register_pending(
        PendingCall(
            call_sid,
            fields.get("From") or fields.get("CallFrom", ""),
            fields.get("To") or fields.get("CallTo", ""),
        )
    )
    query = {"sample-rate": fields["sample-rate"]} if "sample-rate" in fields else {}
    _count(request, "exotel_incoming", "ok")
    return web.json_response({"url": stream_url(request, base, call_sid, query)})


async def exotel_passthru(request: web.Request) -> web.Response:
    """Before the Voicebot applet, the gate: 200 proceeds to the bot, 302 takes the flow's other path.
    After it, a report of the finished stream: stored durably and answered 200, whatever the load."""
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, "exotel_passthru", required=False)
    report = stream_report(fields)
    if report is not None:
        if not call_sid:
            _count(request, "exotel_passthru", "bad_request")
            raise BadInput("no_call_sid")
        # Draining, at capacity or overloaded changes nothing here: the call has already been served.
        await store_callback(
            request, "exotel_passthru", "passthru", call_sid, report_key(call_sid, report), fields
        )
        return web.Response(status=200, text="ok")
    registry = request.app[REGISTRY]
    if reason := registry.refusal():
        request.app[METRICS].calls_rejected.labels(reason=reason).inc()
        logger.warning(
            "passthru refused %s: %s", call_sid or "?", reason, extra={"call_sid": call_sid or "-"}
        )
        _count(request, "exotel_passthru", reason)
        return web.Response(status=302, text=reason)
    from_number = fields.get("From") or fields.get("CallFrom", "")
    to_number = fields.get("To") or fields.get("CallTo", "")
    if call_sid and (reason := await request.app[GATE].check(call_sid, from_number, to_number, "exotel")):
        _count(request, "exotel_passthru", "denied")
        return web.Response(status=302, text=reason)
    _count(request, "exotel_passthru", "ok")
    return web.Response(status=200, text="ok")


async def _callback(request: web.Request, kind: str) -> web.Response:
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, f"exotel_{kind}")
    # Stored durably before Exotel hears 200; the key makes its retries the same record.
    key = callback_key(call_sid, kind, fields)
    stored = await store_callback(request, f"exotel_{kind}", kind, call_sid, key, fields)
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
        _count(request, "exotel_transfer", "unknown")
        return web.json_response({"error": f"no transfer requested for call {call_sid or '?'}"}, status=404)
    _count(request, "exotel_transfer", "ok")
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


async def twilio_incoming(request: web.Request) -> web.Response:
    """Twilio voice webhook: TwiML that connects the call's audio to our stream."""
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, "twilio_incoming", required=False)
    base = stream_base(request)
    registry = request.app[REGISTRY]
    if (refusal := registry.refusal()) or not call_sid:
        if refusal:
            request.app[METRICS].calls_rejected.labels(reason=refusal).inc()
        _count(request, "twilio_incoming", "busy" if call_sid else "bad_request")
        busy = request.app[SETTINGS].prompts.busy
        twiml = f"<Response><Say>{escape(busy)}</Say><Hangup/></Response>"
        return web.Response(text=_xml(twiml), content_type="text/xml")
    from_number, to_number = fields.get("From", ""), fields.get("To", "")
    if await request.app[GATE].check(call_sid, from_number, to_number, "twilio"):
        _count(request, "twilio_incoming", "denied")
        return web.Response(
            text=_xml('<Response><Reject reason="rejected"/></Response>'), content_type="text/xml"
        )
    request.app[GATE].register_pending(PendingCall(call_sid, from_number, to_number, provider="twilio"))
    parameters = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>"
        for name, value in (("From", from_number), ("To", to_number), ("CallSid", call_sid))
    )
    url = stream_url(request, base, call_sid, {})
    twiml = f"<Response><Connect><Stream url={quoteattr(url)}>{parameters}</Stream></Connect></Response>"
    _count(request, "twilio_incoming", "ok")
    return web.Response(text=_xml(twiml), content_type="text/xml")


def _xml(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>{body}'


def add_routes(app: web.Application) -> None:
    """Register the webhook routes of the enabled providers; a disabled provider has none."""
    settings = app[SETTINGS]
    if settings.exotel.enabled:
        app.router.add_route("*", "/webhooks/exotel/incoming", exotel_incoming)
        app.router.add_route("*", "/webhooks/exotel/passthru", exotel_passthru)
        app.router.add_post("/webhooks/exotel/status", exotel_status)
        app.router.add_post("/webhooks/exotel/recording", exotel_recording)
        app.router.add_get("/webhooks/exotel/transfer", exotel_transfer)
    if settings.twilio.enabled:
        app.router.add_post("/webhooks/twilio/incoming", twilio_incoming)
