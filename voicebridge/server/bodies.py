"""Request bodies read once and parsed defensively: hostile bytes become a BadInput (a 4xx), never a 500.

The access check (Twilio's signature covers the form) and the handler (the call's fields) both need the
body; it is read and parsed once and kept on the request, so neither consumes it from the other.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import web

from voicebridge.telephony.sids import NUMBER_FIELDS, is_valid_number

FORM = "application/x-www-form-urlencoded"
CREDENTIAL_FIELD = "token"
MAX_FIELDS = 200
# Webhook and management bodies are flat objects; deeper nesting is an attack on the parser's recursion.
MAX_JSON_DEPTH = 32
# Possessive quantifiers: linear time on any input, unterminated strings included.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class BadInput(Exception):
    """A request refused for what it carries; `reason` is a short constant (a metrics label)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A request body's fields as sent (values unstripped: Twilio signs them as they are)."""

    kind: Literal["none", "form", "json", "other"]
    fields: dict[str, str]
    # Every (name, value) in order, repeated names included: what Twilio's signature covers.
    pairs: tuple[tuple[str, str], ...] = ()


def checked_text(value: str) -> str:
    """`value` if it is encodable text; a lone surrogate cannot be stored, logged as UTF-8 or sent on."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("bad_text") from None
    return value


def json_document(text: str) -> Any:
    """Parse JSON, refusing nesting deeper than MAX_JSON_DEPTH before the parser recurses into it."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            raise BadInput("json_too_deep")
    try:
        return json.loads(text)
    except RecursionError:
        raise BadInput("json_too_deep") from None
    except ValueError:  # malformed, or an integer past Python's 4300-digit limit
        raise BadInput("bad_json") from None


async def body_text(request: web.Request) -> str:
    """The body decoded by its declared charset (UTF-8 when none)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadInput("body_too_large", 413) from None
    except web.RequestPayloadError:  # a Content-Encoding the bytes are not, or a malformed chunked body
        # Nothing more of this body will be read: without EOF, aiohttp's lingering read after the response
        # would raise the same error again and log it as an unhandled exception with a traceback.
        request.content.feed_eof()
        raise BadInput("bad_body") from None
    except ConnectionError:  # the client hung up before sending the body it announced: nobody to answer
        raise BadInput("client_gone") from None
    try:
        return raw.decode(request.charset or "utf-8")
    except LookupError:  # an unknown charset, or a codec that is not a text encoding ("base64")
        raise BadInput("unknown_charset", 415) from None
    except ValueError:
        raise BadInput("bad_encoding") from None


# The access check and the handler both need the fields; the body can be read only once.
PARSED_BODY = web.RequestKey("parsed_body", ParsedBody)


async def parsed_body(request: web.Request) -> ParsedBody:
    """The body's fields, parsed on first use and kept on the request."""
    cached = request.get(PARSED_BODY)
    if cached is not None:
        return cached
    parsed = await _parse(request)
    request[PARSED_BODY] = parsed
    return parsed


async def _parse(request: web.Request) -> ParsedBody:
    if request.method not in ("POST", "PUT", "PATCH") or not request.body_exists:
        return ParsedBody("none", {})
    content_type = request.content_type
    if content_type.startswith("multipart/"):
        # No provider posts multipart; its parser is a surface nobody needs.
        raise BadInput("multipart_body", 415)
    text = await body_text(request)
    if not text:
        return ParsedBody("none", {})
    if content_type == FORM:
        try:
            pairs = parse_qsl(
                text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS
            )
        except ValueError:  # too many fields, or percent-escapes that are not UTF-8
            raise BadInput("bad_form") from None
        checked = tuple((checked_text(k), checked_text(v)) for k, v in pairs)
        return ParsedBody("form", dict(checked), checked)
    if content_type == "application/json":
        document = _json_object(text)
        fields = {
            checked_text(str(key)): checked_text(value if isinstance(value, str) else json.dumps(value))
            for key, value in document.items()
        }
        return ParsedBody("json", fields)
    return ParsedBody("other", {})


async def request_fields(request: web.Request) -> dict[str, str]:
    """Query, form or JSON parameters as one flat dict of strings (Exotel uses all three)."""
    fields = {checked_text(key): checked_text(value) for key, value in request.query.items()}
    fields.update((await parsed_body(request)).fields)
    # Exotel's `token` auth puts our webhook secret in the URL: it is a credential, not a call's field, and
    # must not reach the registry, the outbox or the backend with the rest.
    fields.pop(CREDENTIAL_FIELD, None)
    if not all(is_valid_number(fields.get(name, "")) for name in NUMBER_FIELDS):
        raise BadInput("number_too_long")
    # Exotel wraps some values in quotes ("digits"); strip them once here.
    return {key: value.strip().strip('"') for key, value in fields.items()}


async def json_object(request: web.Request) -> dict[str, Any]:
    """A JSON object body (the management API's), or BadInput."""
    return _json_object(await body_text(request))


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object of at most MAX_FIELDS fields, like a form."""
    document = json_document(text)
    if not isinstance(document, dict):
        raise BadInput("json_not_object")
    if len(document) > MAX_FIELDS:
        raise BadInput("too_many_fields")
    return document
