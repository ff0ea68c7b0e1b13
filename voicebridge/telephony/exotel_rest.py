"""Exotel's REST API for placing outbound calls (Connect Voice AI, `POST /v1/Accounts/{sid}/Calls/connect`,
docs/outbound.md). Apart from telephony/exotel.py, which is the stream and webhook side and already near
the module size limit; nothing here is needed to answer a call.

`connect_form` is pure (the unit tests check its fields); `create_call` does the one request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from voicebridge.config.schema import ExotelConfig, OutboundConfig
from voicebridge.outbound.dialer import DialFailed
from voicebridge.telephony.create_call import post_create_call
from voicebridge.telephony.sids import is_valid_sid, path_segment

logger = logging.getLogger("voicebridge.outbound")

# Exotel documents StreamUrl as under 600 characters.
MAX_STREAM_URL = 599
# CustomField is a free-text field echoed in the status callback; kept small so the request stays small.
MAX_CUSTOM_FIELD = 1000


def custom_field(context: Mapping[str, str]) -> str:
    """The call's context as compact JSON for CustomField; empty when there is none."""
    if not context:
        return ""
    text = json.dumps(dict(context), separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_CUSTOM_FIELD:
        raise ValueError(f"context is {len(text)} characters as CustomField, over {MAX_CUSTOM_FIELD}")
    return text


def connect_form(
    exotel: ExotelConfig,
    outbound: OutboundConfig,
    to_number: str,
    caller_id: str,
    stream_url: str,
    status_callback: str,
    context: Mapping[str, str],
) -> dict[str, str]:
    """The form of Exotel's Calls/connect request: `From` is the number called (Exotel's naming: the first
    leg dialled), `CallerId` the ExoPhone shown; the stream or the flow as configured."""
    form = {
        "From": to_number,
        "CallerId": caller_id,
        "StatusCallback": status_callback,
        "TimeLimit": str(outbound.time_limit_s),
        "TimeOut": str(outbound.ring_timeout_s),
        "Record": "true" if outbound.record else "false",
    }
    if exotel.outbound_mode == "flow":
        form["Url"] = exotel.outbound_flow_url
    else:
        if len(stream_url) > MAX_STREAM_URL:
            raise ValueError(f"stream URL is {len(stream_url)} characters; Exotel takes under 600")
        form["StreamUrl"] = stream_url
        form["StreamType"] = "bidirectional"
    if field := custom_field(context):
        form["CustomField"] = field
    return form


def connect_url(exotel: ExotelConfig) -> str:
    """The Calls/connect endpoint of the configured account."""
    return f"{exotel.rest_base}/v1/Accounts/{path_segment(exotel.account_sid)}/Calls/connect"


def call_sid_of(body: object) -> str:
    """`Call.Sid` of Exotel's JSON answer; DialFailed when it has none of the sid shape."""
    call = body.get("Call") if isinstance(body, dict) else None
    sid = call.get("Sid") if isinstance(call, dict) else None
    if not is_valid_sid(sid):
        raise DialFailed("exotel answered without a usable Call.Sid", retryable=False)
    return str(sid)


async def create_call(exotel: ExotelConfig, form: dict[str, str]) -> str:
    """POST the form; the new call's sid. DialFailed on any refusal (retryable for 429/5xx/network)."""
    token = exotel.api_token.get_secret_value()
    if not (exotel.account_sid and exotel.api_key and token):
        raise DialFailed("exotel account_sid/api_key/api_token are not configured", retryable=False)
    # `.json` asks Exotel for JSON rather than its default XML.
    body = await post_create_call("exotel", connect_url(exotel) + ".json", form, exotel.api_key, token)
    return call_sid_of(body)
