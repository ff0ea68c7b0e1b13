"""Twilio's REST API for placing outbound calls (`POST /2010-04-01/Accounts/{sid}/Calls.json` with inline
TwiML `<Connect><Stream>`, docs/outbound.md). Apart from telephony/twilio.py, which is at the module size
limit with the stream, webhook and call-control side.

`create_form` and `connect_twiml` are pure (the unit tests check them); `create_call` does the request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from xml.sax.saxutils import quoteattr

from voicebridge.config.schema import OutboundConfig, TwilioConfig
from voicebridge.outbound.dialer import DialFailed
from voicebridge.telephony.create_call import post_create_call
from voicebridge.telephony.sids import path_segment

logger = logging.getLogger("voicebridge.outbound")

# The <Parameter> carrying the dial id: the stream's start names which dial it answers (its customParameters).
DIAL_PARAMETER = "DialId"
CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
# Twilio's limit on inline TwiML (error 32018, twilio.com/docs/api/errors/32018): refused before sending.
MAX_TWIML = 4000
# As telephony/twilio.py's; not imported from it, so that this module needs nothing of the webhook side.
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")


def connect_twiml(stream_url: str, parameters: Mapping[str, str]) -> str:
    """`<Connect><Stream>` to our socket, each parameter a `<Parameter>` (quoteattr: a context value with
    quotes, `<` or `&` cannot break out of the attribute)."""
    params = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>" for name, value in parameters.items()
    )
    return f"<Response><Connect><Stream url={quoteattr(stream_url)}>{params}</Stream></Connect></Response>"


def create_form(
    twilio: TwilioConfig,
    outbound: OutboundConfig,
    to_number: str,
    caller_id: str,
    stream_url: str,
    status_callback: str,
    parameters: Mapping[str, str],
) -> dict[str, str]:
    """The form of Twilio's create-call request."""
    twiml = connect_twiml(stream_url, parameters)
    if len(twiml) > MAX_TWIML:
        raise ValueError(f"the call's TwiML is {len(twiml)} characters; Twilio takes at most {MAX_TWIML}")
    form = {
        "To": to_number,
        "From": caller_id,
        "Twiml": twiml,
        "StatusCallback": status_callback,
        # Only the end matters to the attempt's listeners; Twilio's default event is "completed" anyway.
        "StatusCallbackEvent": "completed",
        "Timeout": str(outbound.ring_timeout_s),
        "TimeLimit": str(outbound.time_limit_s),
        "Record": "true" if outbound.record else "false",
    }
    if twilio.machine_detection:
        form["MachineDetection"] = twilio.machine_detection
        form["AsyncAmd"] = "true" if twilio.async_amd else "false"
        form["AsyncAmdStatusCallback"] = status_callback
    return form


async def create_call(twilio: TwilioConfig, form: dict[str, str]) -> str:
    """POST the form; the new call's sid ("CA…"). DialFailed on any refusal."""
    token = twilio.auth_token.get_secret_value()
    if not (ACCOUNT_SID.fullmatch(twilio.account_sid) and token):
        raise DialFailed(
            "twilio account_sid (AC + 32 hex) and auth_token are not configured", retryable=False
        )
    url = f"{twilio.api_base.rstrip('/')}/2010-04-01/Accounts/{path_segment(twilio.account_sid)}/Calls.json"
    body = await post_create_call("twilio", url, form, twilio.account_sid, token)
    sid = body.get("sid") if isinstance(body, dict) else None
    if not (isinstance(sid, str) and CALL_SID.fullmatch(sid)):
        raise DialFailed("twilio answered without a usable call sid", retryable=False)
    return sid
