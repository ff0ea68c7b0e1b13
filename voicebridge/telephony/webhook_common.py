"""What every provider's webhook handlers share: the checked CallSid, the stream URL handed out (on the
node placement chose, with its per-call token), the per-endpoint count. The handlers themselves live in
each provider's module."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from voicebridge.server.bodies import BadInput
from voicebridge.server.keys import DIALER, METRICS, PLACEMENT, SETTINGS, STREAM_TOKENS
from voicebridge.telephony.sids import is_valid_host, is_valid_sid, path_segment


def checked_call_sid(
    request: web.Request, fields: dict[str, str], endpoint: str, required: bool = True
) -> str:
    """The CallSid field, of the providers' shape; a bad one is a counted 400 (it would key records and
    backend URLs)."""
    call_sid = fields.get("CallSid", "")
    if not call_sid and not required:
        return ""
    if not call_sid:
        count_webhook(request, endpoint, "bad_request")
        raise BadInput("no_call_sid")
    if not is_valid_sid(call_sid):
        count_webhook(request, endpoint, "bad_call_sid")
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


async def stream_url(request: web.Request, call_sid: str, query: dict[str, str]) -> str:
    """The wss:// URL of the audio socket for one new call: on the node placement chose (cluster/
    placement.py), else on this node's own address (`server.node_url`, else `stream_base`)."""
    settings = request.app[SETTINGS]
    placed = await request.app[PLACEMENT].place(call_sid)
    if placed is not None:
        base, audience = placed.base, placed.node_id
    else:
        base, audience = settings.server.node_url or stream_base(request), None
    suffix = f"?{urlencode(query)}" if query else ""
    # The token goes in the path: Twilio allows no query string on stream URLs. It names the node it opens.
    tokens = request.app[STREAM_TOKENS]
    token = "" if settings.open_mode else f"/{tokens.issue(call_sid, audience=audience)}"
    return f"{base}/ws/stream/{path_segment(call_sid)}{token}{suffix}"


def dial_stream_url(request: web.Request, base: str, call_sid: str) -> str | None:
    """The stream URL for a call we dialled into a flow (Exotel's outbound_mode "flow": the flow's
    Voicebot applet asks its dynamic URL, our incoming webhook, with the CallSid our create request got
    back): the dial's own URL, with a token for its dial id, so the stream is matched to the dial (its
    context, direction, greeting). None for any other call."""
    dial = request.app[DIALER].pending.by_call_sid(call_sid) if call_sid else None
    if dial is None:
        return None
    # Always a token, open mode or not: a dial's stream is admitted only with one (outbound/pending.py).
    token = request.app[STREAM_TOKENS].issue(dial.dial_id)
    return f"{base}/ws/stream/{path_segment(dial.dial_id)}/{token}"


def count_webhook(request: web.Request, endpoint: str, result: str) -> None:
    """Count one webhook request by endpoint and result (ok, denied, bad_request, ...)."""
    request.app[METRICS].webhooks.labels(endpoint=endpoint, result=result).inc()
