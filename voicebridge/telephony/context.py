"""A call's context: the provider's custom parameters (Exotel: the stream URL's query parameters and the
`start` message's `custom_parameters`; Twilio: `start.customParameters`), bounded and validated, as one
immutable str→str mapping the call carries (`CallInfo.context`).

Pure: the translators build it; what does not fit is dropped and named (reason, escaped key), and the
stream session counts each drop (`voicebridge_context_dropped_total`). A drop never refuses the call: the
parameters come from the business's flow, and a call without one of them is still a call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

MAX_CONTEXT_KEYS = 32
MAX_CONTEXT_KEY_CHARS = 64
MAX_CONTEXT_VALUE_CHARS = 256
# Letters, digits, `_`, `-` and `.`: safe in a log line, a JSON key and a URL. Only keys of letters,
# digits and `_` can be `{placeholders}` of the openai backend's system prompt.
CONTEXT_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A value is text for a prompt or a record: no control characters (a newline would forge a log line).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The daemon's own query parameters and anything named like a credential never become context: a stream
# URL may carry them, and the context is sent to the backend, kept in records and shown by `calls show`.
# Compared lower-cased, with `-` read as `_`.
RESERVED_KEYS = frozenset(
    {
        "token",
        "sample_rate",
        "secret",
        "password",
        "passwd",
        "api_key",
        "apikey",
        "auth",
        "authorization",
        "signature",
        "access_token",
        "stream_secret",
    }
)

Context = Mapping[str, str]
# (reason, the key as it may be logged): bad_key, bad_value, too_long, too_many, reserved.
Dropped = tuple[str, str]


def empty_context() -> Context:
    """A context with nothing in it (immutable, like every context)."""
    return MappingProxyType({})


def _reason(key: str, value: str) -> str:
    """Why this parameter cannot be context; "" when it can."""
    if not CONTEXT_KEY.fullmatch(key):
        return "bad_key"
    if key.lower().replace("-", "_") in RESERVED_KEYS:
        return "reserved"
    if len(value) > MAX_CONTEXT_VALUE_CHARS:
        return "too_long"
    if CONTROL.search(value):
        return "bad_value"
    return ""


def shown_key(key: str) -> str:
    """A key as a log line may carry it: at most 40 characters, escaped (JSON, ASCII only)."""
    return json.dumps(key[:40])


def call_context(
    sources: Iterable[Mapping[str, str]], own: frozenset[str] = frozenset()
) -> tuple[Context, tuple[Dropped, ...]]:
    """One context from `sources` in order of precedence (a key's first value wins), without `own` (names
    the daemon itself puts there, e.g. Twilio's From/To: left out silently); and what was dropped."""
    context: dict[str, str] = {}
    dropped: list[Dropped] = []
    for source in sources:
        for key, value in source.items():
            if key in own or key in context:
                continue
            reason = _reason(key, value)
            if not reason and len(context) >= MAX_CONTEXT_KEYS:
                reason = "too_many"
            if reason:
                dropped.append((reason, shown_key(key)))
                continue
            context[key] = value
    return MappingProxyType(context), tuple(dropped)


def first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A URL query's (name, value) pairs as one value per name, the first: a query may repeat a name."""
    values: dict[str, str] = {}
    for key, value in pairs:
        values.setdefault(key, value)
    return values


def context_for_log(context: Context) -> str:
    """The context as one log line may carry it: JSON, ASCII only, so nothing in it can break the line."""
    return json.dumps(dict(context), ensure_ascii=True, sort_keys=True)
