"""The door of the HTTP server: one middleware letting requests through to webhooks, streams and
management. It knows no provider: a webhook's provider (from its path `/webhooks/<name>/`) checks its own
credentials, a stream needs its per-call token or an enabled provider's credentials; the management door's
checks (bearer token, loopback) are here.

It also turns hostile input (`BadInput`: bodies, sids in paths) into a counted 4xx with one log line.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from voicebridge.cluster.identity import node_id
from voicebridge.config.schema import Settings
from voicebridge.server.bodies import BadInput
from voicebridge.server.keys import METRICS, SETTINGS, STREAM_TOKENS
from voicebridge.telephony.auth import AuthFailure, check_token, in_networks
from voicebridge.telephony.base import Provider
from voicebridge.telephony.providers import PROVIDERS, enabled_providers
from voicebridge.telephony.sids import is_valid_sid
from voicebridge.telephony.stream_tokens import StreamTokens

logger = logging.getLogger("voicebridge.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
# Probes stay open: load balancers and container runtimes must reach them without credentials.
OPEN_PATHS = ("/live", "/ready")
# Any of these means the request came through a proxy, whatever the peer address says.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: list[str]) -> str:
    """The caller's address: the peer, or the nearest untrusted hop of X-Forwarded-For via trusted proxies."""
    address = peer or ""
    if not forwarded_for or not in_networks(address, trusted_proxies):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        address = hop
        if not in_networks(hop, trusted_proxies):
            break
    return address


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _check_stream(
    request: web.Request, settings: Settings, address: str, providers: Sequence[Provider]
) -> None:
    """A stream needs its call's token, or an enabled provider's own credentials on the upgrade."""
    call_sid, token = request.match_info.get("call_sid"), request.match_info.get("token")
    if call_sid and token:
        # Checked here, spent by `spend_stream_token` once the upgrade succeeded: a refused or failed
        # upgrade (a bad sample rate, a plain GET) must not burn the caller's one stream.
        request.app[STREAM_TOKENS].check_unused(call_sid, token)
        return
    for provider in enabled_providers(settings, providers):
        try:
            provider.check_stream(request, settings, address)
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


def surface_of(path: str, providers: Sequence[Provider] = PROVIDERS) -> str:
    """Which door a path belongs to (metrics label and which check applies): a provider's name for its
    webhooks, else "webhooks", "stream", "open" or "management"."""
    if path.startswith("/webhooks/"):
        return next((p.name for p in providers if path.startswith(f"/webhooks/{p.name}/")), "webhooks")
    if path.startswith("/ws/stream"):
        return "stream"
    return "open" if path in OPEN_PATHS else "management"


def _check_path_sid(request: web.Request) -> None:
    """A sid in the path (stream URL, management API) has the providers' shape, or the request is bad."""
    call_sid = request.match_info.get("call_sid")
    if call_sid is not None and not is_valid_sid(call_sid):
        raise BadInput("bad_call_sid")


def access_door(providers: Sequence[Provider] = PROVIDERS) -> Middleware:
    """The door middleware for these providers (the built-in ones in the daemon)."""

    @web.middleware
    async def access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Let a request through only when its surface's authentication says so."""
        settings = request.app[SETTINGS]
        path = request.path
        surface = surface_of(path, providers)
        if surface == "open":
            return await handler(request)
        webhook_provider = next(
            (p for p in enabled_providers(settings, providers) if p.name == surface), None
        )
        if surface not in ("management", "stream") and webhook_provider is None:
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
                if webhook_provider is not None:
                    await webhook_provider.check_webhook(request, settings, address)
                else:
                    _check_stream(request, settings, address, providers)
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

    return access_control


access_control = access_door()


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
    """The process's stream-token issuer; with `server.node_url` its tokens name this node."""
    secret = settings.server.stream_secret.get_secret_value()
    audience = node_id(settings) if settings.server.node_url else ""
    return StreamTokens(secret.encode() if secret else None, audience=audience)
