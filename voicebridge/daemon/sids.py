"""Call and stream identifiers from outside: one shape, checked at every entry, and safe in a URL path."""

from __future__ import annotations

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
