"""A dial request from outside (POST /api/calls's JSON body, the control socket's `dial` op) checked
into a DialRequest: every field bounded, a bad one a DialRefused("bad_request"/"bad_number")."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from voicebridge.outbound.dialer import DialRefused, DialRequest
from voicebridge.outbound.numbers import checked_e164
from voicebridge.telephony.context import call_context
from voicebridge.telephony.sids import MAX_NUMBER_CHARS

FIELDS = frozenset({"to", "from", "context", "provider"})
# The providers that can place calls (outbound/service.py's PLACERS).
DIALLING_PROVIDERS = ("exotel", "twilio")


def _text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > MAX_NUMBER_CHARS:
        raise DialRefused("bad_request", f"{key!r} must be a string of at most {MAX_NUMBER_CHARS} characters")
    return value


def dial_request(body: Mapping[str, Any], origin: str) -> DialRequest:
    """`body` ({to, from?, context?, provider?}) as a DialRequest; the context is held to the rules of an
    inbound call's (telephony/context.py), refused rather than trimmed: the caller should know."""
    if unknown := sorted(set(body) - FIELDS):
        raise DialRefused("bad_request", f"unknown field {unknown[0][:40]!r}")
    to_number = checked_e164(_text(body, "to"))
    from_number = _text(body, "from")
    provider = body.get("provider")
    if provider is not None and provider not in DIALLING_PROVIDERS:
        raise DialRefused("bad_request", "provider must be 'exotel' or 'twilio'")
    raw = body.get("context", {})
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise DialRefused("bad_request", "context must be an object of string values")
    context, dropped = call_context((raw,))
    if dropped:
        reason, key = dropped[0]
        raise DialRefused("bad_request", f"context key {key} refused: {reason}")
    return DialRequest(
        to_number, from_number, MappingProxyType(dict(context)), provider=provider, origin=origin
    )
