"""What every config section shares: unknown keys are errors, and IP network lists are checked on load; and
what every telephony provider's section shares (`ProviderSection`)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict


def check_cidrs(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (like 203.0.113.0/24)") from None
    return values


# A list of IP networks (CIDRs), each checked when the config loads.
Cidrs = Annotated[list[str], AfterValidator(check_cidrs)]


def http_url_fault(url: str) -> str | None:
    """Why `url` is no plain http(s) URL ("not http(s)", "credentials"), or None when it is one."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        return "not http(s)"
    return "credentials" if parts.username is not None or parts.password is not None else None


# A DNS name or an IP address (urlsplit drops an IPv6 address's brackets): it goes into URLs we hand out.
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|[0-9A-Fa-f:.]{2,45}")


def stream_base_fault(url: str) -> str | None:
    """Why `url` is no ws(s)://host[:port] base of our audio sockets ("not ws(s)", "has a path"), or None
    when it is one: a node's address, the part of a stream URL before /ws/stream/."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not one
        valid = parts.scheme in ("ws", "wss") and bool(_HOSTNAME.fullmatch(parts.hostname or ""))
    except ValueError:
        valid = False
    if not valid:
        return "not ws(s)"
    if parts.username is not None or parts.password is not None:
        return "credentials"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "has a path"
    return None


def wyoming_uri_fault(uri: str) -> str | None:
    """Why `uri` is no tcp://host:port address of a Wyoming server, or None when it is one."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return "not tcp://host:port"
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        return "not tcp://host:port"
    return "a path or query" if parts.path not in ("", "/") or parts.query else None


def ip_auth_needs_cidrs(webhook_auth: str, allowed_cidrs: list[str]) -> None:
    if webhook_auth == "ip" and not allowed_cidrs:
        raise ValueError("webhook_auth 'ip' needs allowed_cidrs")


class Section(BaseModel):
    """A config section: unknown keys are errors so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class ProviderSection(Section):
    """A telephony provider's section, named as the provider is (`[exotel]`, `[twilio]`). `Settings` finds
    its provider sections by this type, so the rules about who may get in (open mode, the management
    token, the start-up refusal of an open door on the network) cover a provider as soon as its section is
    a field of Settings. `webhook_auth` has no default here, so a provider section that forgets to declare
    its modes cannot load at all rather than count as open."""

    # A disabled provider has no routes and no streams: it counts for nothing in the rules.
    enabled: bool = True
    # Each provider narrows this to its own modes with a Literal defaulting to "none", the open mode.
    webhook_auth: str

    def is_authenticated(self) -> bool:
        """Whether its webhooks and streams need credentials: any mode but "none"."""
        return self.webhook_auth != "none"
