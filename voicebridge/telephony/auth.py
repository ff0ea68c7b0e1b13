"""Who may knock: webhook authentication per provider, per-call stream tokens, and the management door.

Every check is a pure function of the request's parts and the settings, so each mode is tested for
accept and reject without a network. Failures say why in a word (for logs and metrics), never with the
secret or the credentials that were offered.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import ipaddress
import os
import re
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

STREAM_TOKEN_TTL_S = 300.0
# "<expiry in unix seconds>.<32 hex>": ASCII digits only ("²".isdigit() is true), a bounded length, and no
# leading zero: "0" + token would name the same expiry and MAC, i.e. the same token spelt anew.
STREAM_TOKEN = re.compile(r"([1-9][0-9]{0,11})\.([0-9a-f]{32})")
# Redeemed tokens are remembered until they expire; a flood of valid ones beyond this is refused.
MAX_REDEEMED_TOKENS = 100_000


class AuthFailure(Exception):
    """A request that is not let in; `status` is 401 (credentials) or 403 (where it comes from)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: list[str]) -> str:
    """The caller's address: the peer, or the nearest untrusted hop of X-Forwarded-For via trusted proxies."""
    address = peer or ""
    if not forwarded_for or not _in_networks(address, trusted_proxies):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        address = hop
        if not _in_networks(hop, trusted_proxies):
            break
    return address


def _in_networks(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _credential_bytes(offered: str, what: str) -> bytes:
    """A header value as bytes; raw non-UTF-8 bytes (aiohttp keeps them as surrogates) are malformed."""
    try:
        return offered.encode("utf-8")
    except UnicodeEncodeError:
        raise AuthFailure(f"malformed {what}") from None


def check_basic(authorization: str | None, username: str, password: str) -> None:
    """HTTP Basic credentials (Exotel puts them in the URL as https://user:pass@host/...)."""
    if not authorization or not authorization.lower().startswith("basic "):
        raise AuthFailure("no basic credentials")
    try:
        offered = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise AuthFailure("malformed basic credentials") from None
    user, _, secret = offered.partition(":")
    # Both compared, always, so timing does not tell which one was wrong.
    good_user = hmac.compare_digest(user.encode(), username.encode())
    good_secret = hmac.compare_digest(secret.encode(), password.encode())
    if not (good_user and good_secret):
        raise AuthFailure("wrong basic credentials")


def check_token(offered: str | None, token: str) -> None:
    """A shared secret in the URL's query (`?token=`) or the X-Voicebridge-Token header."""
    if not offered:
        raise AuthFailure("no token")
    if not hmac.compare_digest(_credential_bytes(offered, "token"), token.encode()):
        raise AuthFailure("wrong token")


def check_ip(address: str, allowed: list[str]) -> None:
    """The client address (see `client_address`) must be in one of the allowed networks."""
    if not _in_networks(address, allowed):
        raise AuthFailure("address not allowed", status=403)


# Form parameters as sent: a mapping, or (name, value) pairs in order when a name may repeat.
FormParams = Mapping[str, str] | Sequence[tuple[str, str]]
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def _grouped(params: FormParams) -> dict[str, list[str]]:
    pairs = params.items() if isinstance(params, Mapping) else params
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def _payload(url: str, grouped: dict[str, list[str]], sdk_order: bool) -> str:
    return url + "".join(
        name + value
        for name in sorted(grouped)
        for value in (sorted(set(grouped[name])) if sdk_order else grouped[name])
    )


def twilio_signature(auth_token: str, url: str, params: FormParams) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 over the URL and the params sorted by name, each name
    followed by its value (every value of a repeated name, in the order sent)."""
    return _sign(auth_token, _payload(url, _grouped(params), sdk_order=False))


def _sign(auth_token: str, payload: str) -> str:
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """`url`, and the same with the scheme's default port added or removed: Twilio's own validators accept
    either, since what Twilio signs depends on how the URL was configured."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return [url]
    if default is None or not parts.hostname:
        return [url]
    if port is None:
        return [url, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}"))]
    if port == default:
        return [url, urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))]
    return [url]


def check_twilio_signature(signature: str | None, auth_token: str, url: str, params: FormParams) -> None:
    """Verify X-Twilio-Signature in constant time against each way Twilio may have signed this request:
    the URL with or without its default port, a repeated name's values in order or sorted (as Twilio's
    SDKs compute them)."""
    if not signature:
        raise AuthFailure("no signature")
    offered = _credential_bytes(signature, "signature")
    grouped = _grouped(params)
    payloads = {
        _payload(variant, grouped, order) for variant in _url_variants(url) for order in (False, True)
    }
    matched = False
    for payload in sorted(payloads):
        matched |= hmac.compare_digest(offered, _sign(auth_token, payload).encode())
    if not matched:
        raise AuthFailure("bad signature")


class StreamTokens:
    """Short-lived per-call tokens in the stream URL the incoming webhook hands out: HMAC(sid, expiry)."""

    def __init__(self, secret: bytes | None = None, ttl_s: float = STREAM_TOKEN_TTL_S) -> None:
        # A random key per process when none is configured: a restart only voids unused URLs.
        self._secret = secret or os.urandom(32)
        self._ttl = ttl_s
        # Single use: (call sid, expiry) -> expiry, and the same keys in expiry order for pruning. The MAC is
        # a function of exactly these two, so the key names the token however it is spelt.
        self._redeemed: dict[tuple[str, int], int] = {}
        self._expiries: list[tuple[int, tuple[str, int]]] = []

    def issue(self, call_sid: str, now: float | None = None) -> str:
        """A token valid for `call_sid` for the next ttl seconds."""
        expires = int((now if now is not None else time.time()) + self._ttl)
        return f"{expires}.{self._mac(call_sid, expires)}"

    def check(self, call_sid: str, token: str, now: float | None = None) -> int:
        """Raise AuthFailure unless `token` was issued for `call_sid` and has not expired; its expiry."""
        parts = STREAM_TOKEN.fullmatch(token)
        if parts is None:
            raise AuthFailure("malformed stream token")
        expires = int(parts[1])
        if not hmac.compare_digest(parts[2].encode(), self._mac(call_sid, expires).encode()):
            raise AuthFailure("stream token not for this call")
        if expires < (now if now is not None else time.time()):
            raise AuthFailure("stream token expired")
        return expires

    def check_unused(self, call_sid: str, token: str, now: float | None = None) -> int:
        """`check`, and refuse a token already redeemed (the upgrade's check; `redeem` spends it later)."""
        expires = self.check(call_sid, token, now)
        self._forget_expired(now if now is not None else time.time())
        if (call_sid, expires) in self._redeemed:
            raise AuthFailure("stream token already used")
        return expires

    def redeem(self, call_sid: str, token: str, now: float | None = None) -> None:
        """`check_unused`, and use the token up: one stream per issued URL. No await in here, so of two
        connections racing with one token exactly one redeems it."""
        expires = self.check_unused(call_sid, token, now)
        if len(self._redeemed) >= MAX_REDEEMED_TOKENS:
            raise AuthFailure("too many stream tokens in use", status=403)
        key = (call_sid, expires)
        self._redeemed[key] = expires
        heapq.heappush(self._expiries, (expires, key))

    def _forget_expired(self, moment: float) -> None:
        while self._expiries and self._expiries[0][0] < moment:
            _, old = heapq.heappop(self._expiries)
            self._redeemed.pop(old, None)

    @property
    def remembered(self) -> int:
        """Redeemed tokens still remembered (each until its expiry)."""
        return len(self._redeemed)

    def _mac(self, call_sid: str, expires: int) -> str:
        message = f"{call_sid}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]
