"""Credential checks shared by the providers' webhook auth (and the management door's token): each a pure
function of the request's parts, so each mode is tested for accept and reject without a network.

Failures say why in a word (for logs and metrics), never with the secret or the credentials offered.
Provider-specific schemes live in the provider's module (Twilio's signature in telephony/twilio.py).
"""

from __future__ import annotations

import base64
import hmac
import ipaddress


class AuthFailure(Exception):
    """A request that is not let in; `status` is 401 (credentials) or 403 (where it comes from)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def in_networks(address: str, networks: list[str]) -> bool:
    """Whether `address` is an IP address inside one of `networks` (CIDR strings)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


def credential_bytes(offered: str, what: str) -> bytes:
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
    if not hmac.compare_digest(credential_bytes(offered, "token"), token.encode()):
        raise AuthFailure("wrong token")


def check_ip(address: str, allowed: list[str]) -> None:
    """The client address (`server.access.client_address`) must be in one of the allowed networks."""
    if not in_networks(address, allowed):
        raise AuthFailure("address not allowed", status=403)
