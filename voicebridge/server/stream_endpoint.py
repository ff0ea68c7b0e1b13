"""The provider's audio WebSocket endpoint: the URL checked before the upgrade, then one StreamSession."""

from __future__ import annotations

import logging
import re

from aiohttp import WSCloseCode, web

from voicebridge.call.session import StreamSession
from voicebridge.outbound.pending import is_dial_id
from voicebridge.outbound.status import note_stream_end
from voicebridge.server.access import spend_stream_token
from voicebridge.server.keys import CALL_SERVICES, DIALER, METRICS, SETTINGS
from voicebridge.telephony.context import first_values
from voicebridge.telephony.sids import is_valid_sid

logger = logging.getLogger("voicebridge.stream")

SUPPORTED_RATES = (8000, 16000, 24000)
# RFC 6455 4.1: the key is 16 random bytes, base64-encoded (24 ASCII characters). aiohttp decodes it inside
# ws.prepare(), where a non-ASCII key raises UnicodeEncodeError: a 500 with its traceback, before any check.
WEBSOCKET_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")


async def stream_handler(request: web.Request) -> web.StreamResponse:
    """The provider's audio WebSocket; one connection is one call."""
    path_sid = request.match_info.get("call_sid")
    if path_sid is not None and not is_valid_sid(path_sid):
        # It would key the call's records and every log line: refused before the upgrade.
        request.app[METRICS].calls_rejected.labels(reason="bad_call_sid").inc()
        logger.warning("refusing a stream URL with an unusable call sid %r", path_sid[:40])
        raise web.HTTPBadRequest(text="unusable call sid\n")
    try:
        rate = requested_rate(request.query.get("sample-rate"))
    except ValueError as exc:
        request.app[METRICS].calls_rejected.labels(reason="bad_sample_rate").inc()
        logger.warning("refusing a stream URL: %s", exc)
        raise web.HTTPBadRequest(text=str(exc)) from None
    key = request.headers.get("Sec-WebSocket-Key")
    if key is not None and not WEBSOCKET_KEY.fullmatch(key):
        request.app[METRICS].http_rejections.labels(surface="stream", reason="bad_websocket_key").inc()
        logger.warning("refusing a stream upgrade with a malformed Sec-WebSocket-Key %r", key[:40])
        raise web.HTTPBadRequest(text="malformed Sec-WebSocket-Key\n")
    limits = request.app[SETTINGS].limits
    # Pings find a dead peer while the line is quiet (aiohttp pings only after `heartbeat` s without a
    # message, and cuts a peer whose pong is not back within half of it).
    ws = web.WebSocketResponse(max_msg_size=limits.max_message_bytes, heartbeat=limits.ws_heartbeat_s or None)
    await ws.prepare(request)
    if (refusal := spend_stream_token(request)) is not None:
        # Spent only once the upgrade succeeded: a refused upgrade must not burn the caller's token.
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=refusal.encode())
        return ws
    dial = None
    if path_sid is not None and is_dial_id(path_sid):
        # A stream URL we handed a provider with a dial (outbound/pending.py); one stream per dial.
        if (dial := request.app[DIALER].pending.take(path_sid)) is None:
            request.app[METRICS].auth_failures.labels(surface="stream", reason="no open dial").inc()
            logger.warning(
                "refusing a stream for dial %s: not open (never placed, expired or used)", path_sid
            )
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no open dial")
            return ws
    session = StreamSession(
        request.app[CALL_SERVICES],
        ws,
        path_sid,
        rate,
        token_bound="token" in request.match_info,
        # The query as given (bounded by the request line's limit): the translator takes the context from it.
        url_parameters=first_values(request.query.items()),
        abort=lambda: request.transport.abort() if request.transport is not None else None,
        dial=dial,
    )
    await session.run()
    if dial is not None and session.call_sid:
        note_stream_end(request.app, dial.provider, session.call_sid)
    return ws


def requested_rate(raw: str | None) -> int | None:
    """The `sample-rate` query parameter of Exotel's Voicebot URL; None when absent, ValueError if bad."""
    if not raw:
        return None
    digits = raw.strip().lower().removesuffix("hz")
    rate = int(digits) if re.fullmatch(r"[0-9]{1,6}", digits) else 0
    if rate not in SUPPORTED_RATES:
        raise ValueError(f"unsupported sample-rate {raw[:20]!r}")
    return rate
