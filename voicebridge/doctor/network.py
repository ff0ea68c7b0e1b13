"""Doctor checks that touch the network: the listen port can be bound, and the AI backend answers."""

from __future__ import annotations

import errno
import http.client
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from voicebridge.config.schema import Settings
from voicebridge.doctor.report import Check, error_text

# A health probe, not a conversation turn: room for a TLS handshake over a slow link, and quick to fail.
BACKEND_TIMEOUT_S = 5.0


def _voicebridge_answers(control_socket: Path) -> bool:
    """True when something accepts connections on the control socket, i.e. a daemon is running."""
    if not control_socket.is_socket():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(control_socket))
        except OSError:
            return False
    return True


def check_port(settings: Settings) -> Check:
    """Bind server.host:server.port the way aiohttp will (SO_REUSEADDR, v6-only IPv6 sockets)."""
    name = "listen port"
    host, port = settings.server.host, settings.server.port
    where = f"port {port} on {host or 'all interfaces'}"
    if port == 0:
        return Check(name, "warn", "server.port = 0: a new random port at every start", "set server.port")
    try:
        # asyncio treats an empty host as every interface, so do the same.
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return Check(
            name, "fail", f"server.host {host!r} does not resolve: {exc.strerror}", "set server.host"
        )
    for family, kind, proto, _, address in dict.fromkeys(infos):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue  # asyncio skips address families the host lacks (IPv6 off); so do we
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                return _bind_failure(settings, where, exc)
    return Check(name, "pass", f"{where} is free")


def _bind_failure(settings: Settings, where: str, exc: OSError) -> Check:
    if exc.errno != errno.EADDRINUSE:
        low = " (ports below 1024 need CAP_NET_BIND_SERVICE)" if exc.errno == errno.EACCES else ""
        detail = f"cannot listen on {where}: {exc.strerror or exc}"
        return Check("listen port", "fail", detail, f"check server.host and server.port{low}")
    control = settings.control_socket_path()
    if _voicebridge_answers(control):
        # WARN, not FAIL: doctor is also run on a live host to check its config, where the port is held
        # by the very daemon being checked. Not a pass either: a second daemon could not start.
        detail = f"{where} is in use, probably by the voicebridge daemon answering on {control}"
        return Check("listen port", "warn", detail, "stop that daemon before starting another one here")
    return Check("listen port", "fail", f"{where} is in use", "stop whatever holds it or set server.port")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would resend the Authorization header to wherever a redirect points; report it instead.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {BACKEND_TIMEOUT_S:.0f} s"
    if isinstance(exc, socket.gaierror):
        return f"name lookup failed ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return error_text(exc)


def check_backend(settings: Settings) -> Check:
    """Reach the AI backend (node: /v1/health, openai: /models) with its API key; echo is built in."""
    name = "backend"
    backend = settings.backend
    if backend.kind == "echo":
        return Check(name, "pass", "echo: built in")
    fix = "set backend.url to the backend's http(s) base URL"
    if not backend.url:
        return Check(name, "fail", f"backend.kind is {backend.kind} but backend.url is empty", fix)
    try:
        parts = urlsplit(backend.url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:  # not quoted: a malformed URL may carry credentials
        return Check(name, "fail", "backend.url is not an http(s) URL", fix)
    if "@" in parts.netloc:  # never printed, and the key belongs in backend.api_key anyway
        return Check(name, "fail", "backend.url contains credentials (user:password@)", fix)
    key = backend.api_key.get_secret_value()
    # The node contract (docs/backend-api.md) sends X-Api-Key; OpenAI-compatible servers want a bearer token.
    if backend.kind == "node":
        probe = backend.url.rstrip("/") + "/v1/health"
        headers = {"X-Api-Key": key, "X-Voicebridge-Version": "1"} if key else {"X-Voicebridge-Version": "1"}
    else:
        probe = backend.url.rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(probe, headers=headers)
    # No proxy from the environment: the daemon's aiohttp client does not use one either.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    started = time.perf_counter()
    try:
        with opener.open(request, timeout=BACKEND_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # any non-2xx, redirects included (see _NoRedirect)
        status = exc.code
        exc.close()
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, BaseException) else OSError(0, str(exc.reason))
        detail = f"backend {probe} unreachable: {_reason(reason)}"
        return Check(name, "fail", detail, "start the backend or correct backend.url")
    except OSError as exc:  # a timeout while reading the answer
        return Check(name, "fail", f"backend {probe} unreachable: {_reason(exc)}", "check the backend")
    except (ValueError, http.client.HTTPException) as exc:
        return Check(name, "fail", f"backend {probe}: request failed ({type(exc).__name__})", fix)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if status in (401, 403):
        if not key:
            fix = "set backend.api_key (or VOICEBRIDGE_BACKEND__API_KEY)"
            return Check(name, "fail", f"backend {probe} wants an API key (HTTP {status})", fix)
        fix = "check backend.api_key (or VOICEBRIDGE_BACKEND__API_KEY)"
        return Check(name, "fail", f"backend {probe} rejected the API key (HTTP {status})", fix)
    if 200 <= status < 300:
        return Check(name, "pass", f"{backend.kind} backend {probe}: HTTP {status} in {elapsed_ms:.0f} ms")
    return Check(
        name, "warn", f"backend {probe} answered HTTP {status}", "check backend.url and the backend's logs"
    )
