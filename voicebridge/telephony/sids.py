"""Call and stream identifiers from outside: one shape, checked at every entry, and safe in a URL path."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote

# Exotel and Twilio sids are short ASCII (hex, or "CA"/"MZ" + hex). Anything else cannot key a call's
# records: no dots (a "..", "." segment moves a backend URL), slashes, query or fragment marks.
SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SID_RULE = "1-64 letters, digits, '-' or '_'"


def is_valid_sid(value: object) -> bool:
    """True for a call or stream sid of the providers' shape."""
    return isinstance(value, str) and SID.fullmatch(value) is not None


def path_segment(value: str) -> str:
    """`value` as exactly one URL path segment, whatever it contains."""
    return quote(value, safe="")


# A caller's or callee's number (From, To): E.164 is at most 16 characters, but Twilio also sends client
# identities and SIP addresses; a bound keeps a field of any size out of the registry, records and logs.
MAX_NUMBER_CHARS = 64
NUMBER_FIELDS = ("From", "To", "CallFrom", "CallTo")


def is_valid_number(value: str) -> bool:
    """True for a From/To of bounded length (empty counts: not every request carries one)."""
    return len(value) <= MAX_NUMBER_CHARS


# A Host header: a DNS name (letters, digits, '-', '_' in dot-separated labels) or an IPv4 address, or an
# IPv6 address in brackets; then an optional port.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST = re.compile(
    rf"(?P<name>{_LABEL}(?:\.{_LABEL})*\.?|\[(?P<ipv6>[0-9A-Fa-f:.]{{2,45}})\])(?::(?P<port>[0-9]{{1,5}}))?"
)


def is_valid_host(value: str) -> bool:
    """True for a Host header we may put in a URL we hand out: a hostname or IP, optional port."""
    match = HOST.fullmatch(value)
    if match is None or len(value) > 260:
        return False
    if match["port"] is not None and not 0 < int(match["port"]) < 65536:
        return False
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return False
    return True
