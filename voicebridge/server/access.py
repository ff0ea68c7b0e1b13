"""The door of the HTTP server: one middleware applying `auth` to webhooks, streams and management.

It also turns hostile input (`BadInput`: bodies, sids in paths) into a counted 4xx with one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from voicebridge.config.schema import Settings
from voicebridge.server.bodies import FORM, BadInput, parsed_body
from voicebridge.server.keys import METRICS, SETTINGS, STREAM_TOKENS
from voicebridge.telephony.auth import (
    AuthFailure,
    StreamTokens,
    check_basic,
    check_ip,
    check_token,
    check_twilio_signature,
    client_address,
    is_loopback,
)
from voicebridge.telephony.sids import is_valid_sid

logger = logging.getLogger("voicebridge.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes stay open: load balancers and container runtimes must reach them without credentials.
OPEN_PATHS = ("/live", "/ready")
# Any of these means the request came through a proxy, whatever the peer address says.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def signed_url(request: web.Request, settings: Settings, websocket: bool = False) -> str:
    """The URL the provider called, as it saw it (public_url when set): what Twilio signs."""
    public = settings.server.public_url.rstrip("/")
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


async def _check_exotel(request: web.Request, settings: Settings, address: str) -> None:
    exotel = settings.exotel
    if exotel.webhook_auth == "basic":
        check_basic(
            request.headers.get("Authorization"),
            exotel.webhook_username,
            exotel.webhook_password.get_secret_value(),
        )
    elif exotel.webhook_auth == "token":
        offered = request.query.get("token") or request.headers.get("X-Voicebridge-Token")
        check_token(offered, exotel.webhook_token.get_secret_value())
    elif exotel.webhook_auth == "ip":
        check_ip(address, exotel.allowed_cidrs)


async def _check_twilio(request: web.Request, settings: Settings, address: str) -> None:
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


def _check_stream(request: web.Request, settings: Settings, address: str) -> None:
    """A stream needs its call's token, or the provider's own credentials on the upgrade."""
    call_sid, token = request.match_info.get("call_sid"), request.match_info.get("token")
    if call_sid and token:
        # Checked here, spent by `spend_stream_token` once the upgrade succeeded: a refused or failed
        # upgrade (a bad sample rate, a plain GET) must not burn the caller's one stream.
        request.app[STREAM_TOKENS].check_unused(call_sid, token)
        return
    exotel, twilio = settings.exotel, settings.twilio
    attempts: list[Callable[[], None]] = []
    if exotel.enabled and exotel.webhook_auth == "basic":
        attempts.append(
            lambda: check_basic(
                request.headers.get("Authorization"),
                exotel.webhook_username,
                exotel.webhook_password.get_secret_value(),
            )
        )
    if twilio.enabled and twilio.webhook_auth == "signature":
        attempts.append(
            lambda: check_twilio_signature(
                request.headers.get("X-Twilio-Signature"),
                twilio.auth_token.get_secret_value(),
                signed_url(request, settings, websocket=True),
                {},
            )
        )
    for provider in (exotel, twilio):
        if provider.enabled and provider.webhook_auth == "ip":
            attempts.append(lambda allowed=provider.allowed_cidrs: check_ip(address, allowed))
    for attempt in attempts:
        try:
            attempt()
            return
        except AuthFailure:
            continue
    raise AuthFailure("stream without a valid token or credentials")


def _check_management(request: web.Request, settings: Settings, address: str) -> None:
    management = settings.management
    token = management.token.get_secret_value()
    authorization = request.headers.get("Authorization", "")
    if token and authorization.startswith("Bearer "):
        check_token(authorization[7:].strip(), token)
        return
    if request.path == "/metrics" and management.public_metrics:
        return
    if request.path == "/health" and management.public_health:
        return
    if settings.management_api_needs_token:
        # A proxy on this host that adds no header makes the public look like loopback: only the token.
        if token:
            raise AuthFailure("management needs the bearer token")
        raise AuthFailure("management needs management.token", status=403)
    if is_loopback(address) and not any(header in request.headers for header in PROXY_HEADERS):
        return
    raise AuthFailure("management needs loopback or the bearer token", status=401 if token else 403)


def surface_of(path: str) -> str:
    """Which door a path belongs to (metrics label and which check applies)."""
    if path.startswith("/webhooks/exotel/"):
        return "exotel"
    if path.startswith("/webhooks/twilio/"):
        return "twilio"
    if path.startswith("/webhooks/"):
        return "webhooks"
    if path.startswith("/ws/stream"):
        return "stream"
    return "open" if path in OPEN_PATHS else "management"


def _check_path_sid(request: web.Request) -> None:
    """A sid in the path (stream URL, management API) has the providers' shape, or the request is bad."""
    call_sid = request.match_info.get("call_sid")
    if call_sid is not None and not is_valid_sid(call_sid):
        raise BadInput("bad_call_sid")


@web.middleware
async def access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let a request through only when its surface's authentication says so."""
    settings = request.app[SETTINGS]
    path = request.path
    surface = surface_of(path)
    if surface == "open":
        return await handler(request)
    if surface == "webhooks" or (surface in ("exotel", "twilio") and not settings.provider_enabled(surface)):
        # A disabled provider has no door at all (its routes are not even registered).
        raise web.HTTPNotFound()
    address = client_address(
        request.remote, request.headers.get("X-Forwarded-For"), settings.server.trusted_proxies
    )
    metrics = request.app[METRICS]
    try:
        _check_path_sid(request)
        if surface == "management":
            _check_management(request, settings, address)
        elif not settings.open_mode:
            if surface == "exotel":
                await _check_exotel(request, settings, address)
            elif surface == "twilio":
                await _check_twilio(request, settings, address)
            else:
                _check_stream(request, settings, address)
        return await handler(request)
    except AuthFailure as failure:
        metrics.auth_failures.labels(surface=surface, reason=failure.reason).inc()
        # The path, not the query (a token may be in it), and a stream's call sid without its token.
        shown = f"/ws/stream/{request.match_info.get('call_sid', '')}" if surface == "stream" else path
        logger.warning("refused %s %.200s from %s: %s", request.method, shown, address, failure.reason)
        refusal = web.HTTPForbidden if failure.status == 403 else web.HTTPUnauthorized
        raise refusal(text=failure.reason) from None
    except BadInput as bad:
        return refuse_bad_input(request, bad, address)


def refuse_bad_input(request: web.Request, bad: BadInput, address: str = "") -> web.Response:
    """The one answer to hostile input, wherever it is found: counted, one log line, a 4xx."""
    surface = surface_of(request.path)
    request.app[METRICS].http_rejections.labels(surface=surface, reason=bad.reason).inc()
    logger.warning(
        "refused %s %.200s from %s: %s", request.method, request.path, address or request.remote, bad.reason
    )
    return web.Response(status=bad.status, text=bad.reason)


def spend_stream_token(request: web.Request) -> str | None:
    """Redeem the stream URL's token once the WebSocket is accepted; the refusal's reason if it was spent
    meanwhile (two connections racing with one token: exactly one gets the call), else None."""
    call_sid, token = request.match_info.get("call_sid"), request.match_info.get("token")
    if request.app[SETTINGS].open_mode or not (call_sid and token):
        return None
    try:
        request.app[STREAM_TOKENS].redeem(call_sid, token)
    except AuthFailure as failure:
        request.app[METRICS].auth_failures.labels(surface="stream", reason=failure.reason).inc()
        logger.warning("refused stream /ws/stream/%s: %s", call_sid, failure.reason)
        return failure.reason
    return None


def stream_tokens(settings: Settings) -> StreamTokens:
    """The process's stream-token issuer."""
    secret = settings.server.stream_secret.get_secret_value()
    return StreamTokens(secret.encode() if secret else None)
