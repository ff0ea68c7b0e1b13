"""The control socket's wire format: one JSON object per line in, one per line out, whatever arrives."""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1


class RequestError(Exception):
    """A request the daemon refuses; `code` says why (bad_request, bad_version, unknown_op, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as a JSON object; RequestError for anything else, however hostile."""
    try:
        # Strict UTF-8: json.loads on bytes would guess UTF-16/32 from the byte pattern.
        request = json.loads(line.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers bad JSON, NaN/Infinity and integers beyond Python's digit limit;
        # RecursionError a few thousand nested brackets.
        raise RequestError("bad_request", "request is not valid JSON") from None
    if not isinstance(request, dict):
        raise RequestError("bad_request", "a request is one JSON object per line")
    return request


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def reply_id(value: Any) -> str | int | None:
    """The request's `id`, echoed only when it is a short string or a plain integer."""
    if isinstance(value, str) and len(value) <= 100:
        return value
    if type(value) is int and abs(value) < 2**63:
        return value
    return None


def brief(value: Any) -> str:
    """A value from the request, quoted for an error message and cut short."""
    text = repr(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def string_param(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise RequestError("bad_request", f"{brief(request.get('op'))} needs {key!r} (a string)")
    return value
