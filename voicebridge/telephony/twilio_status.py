"""Twilio's StatusCallback for the calls we place (registered by telephony/twilio.py): apart from the REST
client, which the Dialer imports, because this handler needs the daemon's AppKeys."""

from __future__ import annotations

from aiohttp import web

from voicebridge.outbound.status import note_status
from voicebridge.records.callbacks import callback_key, store_callback
from voicebridge.server.bodies import request_fields
from voicebridge.telephony.webhook_common import checked_call_sid


async def twilio_status(request: web.Request) -> web.Response:
    """StatusCallback (and AsyncAmdStatusCallback) of a call we placed: stored once per CallSid and status
    like Exotel's, and a terminal one ends the attempt (outbound/status.py)."""
    fields = await request_fields(request)
    call_sid = checked_call_sid(request, fields, "twilio_status")
    kind = "amd" if "AnsweredBy" in fields and "CallStatus" not in fields else "status"
    stored = await store_callback(
        request, "twilio_status", kind, call_sid, callback_key(call_sid, kind, fields), fields
    )
    note_status(request.app, "twilio", call_sid, fields)
    return web.json_response({"ok": True, "duplicate": not stored})
