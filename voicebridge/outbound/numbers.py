"""E.164 validation of the numbers we dial: a bad number never reaches a provider (issue 17, item 4)."""

from __future__ import annotations

import re

from voicebridge.outbound.dialer import DialRefused

# ITU-T E.164: "+", a country code that never starts with 0, at most 15 digits in all. 8 digits is the
# shortest number worth dialling (smaller countries' numbers with their code); ASCII digits only, since
# str.isdigit() accepts "²" and other scripts' digits.
E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def is_e164(number: str) -> bool:
    """True for "+" and 8-15 ASCII digits, the first not 0."""
    return E164.fullmatch(number) is not None


def checked_e164(number: str, field: str = "to") -> str:
    """`number` when it is E.164, else DialRefused("bad_number"); the refusal quotes only a bounded prefix."""
    if not isinstance(number, str) or not is_e164(number):
        shown = number[:20] if isinstance(number, str) else type(number).__name__
        raise DialRefused("bad_number", f"{field} {shown!r} is not E.164 (+ and 8-15 digits)")
    return number
