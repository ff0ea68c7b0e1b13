"""Provider callbacks kept as records: status and recording callbacks, and Exotel's Passthru stream reports.

A Passthru applet placed after the Voicebot applet reports how the stream ended, with the fields Exotel
documents (docs/exotel-passthru.md): `Stream[StreamSID]`, `Stream[Status]`, `Stream[Duration]`,
`Stream[RecordingUrl]`, `Stream[StreamUrl]`, `Stream[DisconnectedBy]`, or the same names in one JSON
object under `Stream`. Such a request is a record, not a new call: it is stored in the outbox before it is
answered, like a status callback. A Passthru without them is the gate before the Voicebot applet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from aiohttp import web

from voicebridge.server.keys import METRICS, OUTBOX, REGISTRY
from voicebridge.telephony.sids import path_segment

logger = logging.getLogger("voicebridge.webhooks")

# Present only in the report Exotel sends after a stream: the stream's id and how it ended. (A Passthru
# before the stream may carry a flat `StreamSid`/`StreamUrl`; that one is still the gate.)
REPORT_MARKERS = ("Stream[StreamSID]", "Stream[Status]")
# The JSON form of the report is a few hundred bytes; far beyond is not Exotel.
MAX_STREAM_JSON = 16 * 1024
# A key part kept as the provider sent it (a status word, a hex StreamSID); anything else is hashed.
_PLAIN_KEY_PART = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRET_FIELD = re.compile(r"token|auth|secret|password|signature", re.IGNORECASE)


def stream_report(fields: dict[str, str]) -> dict[str, str] | None:
    """The finished stream's fields as `Stream[Name]` when this Passthru reports one, else None."""
    report = {key: value for key, value in fields.items() if key.startswith("Stream[") and key.endswith("]")}
    raw = fields.get("Stream", "")
    if raw.startswith("{") and len(raw) <= MAX_STREAM_JSON:
        try:
            nested: Any = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or hostile JSON: no report from it
            nested = None
        if isinstance(nested, dict):
            for name, value in nested.items():
                if isinstance(value, str | int | float) and not isinstance(value, bool):
                    report.setdefault(f"Stream[{name}]", str(value))
    return report if any(report.get(marker) for marker in REPORT_MARKERS) else None


def report_key(call_sid: str, report: dict[str, str]) -> str:
    """One key per stream: its StreamSID, else a digest of what it reported (a retry is the same)."""
    stream_sid = report.get("Stream[StreamSID]", "")
    return f"{call_sid}:passthru:{key_part(stream_sid) if stream_sid else _digest(report)}"


def callback_key(call_sid: str, kind: str, fields: dict[str, str]) -> str:
    """The provider's retries of one callback share a key; callbacks saying different things do not."""
    detail = fields.get("Status") or fields.get("EventType") or fields.get("RecordingUrl")
    return f"{call_sid}:{kind}:{key_part(detail) if detail else _digest(fields)}"


def key_part(value: str) -> str:
    """An outside value as part of a key: kept as it is when short and plain, else its digest. A key is
    sent as the Idempotency-Key header; a newline in it would make every delivery fail."""
    if _PLAIN_KEY_PART.fullmatch(value):
        return value
    return "sha256-" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _digest(fields: dict[str, str]) -> str:
    canonical = json.dumps(sorted(fields.items()), ensure_ascii=True)
    return "sha256-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _kept_fields(fields: dict[str, str]) -> dict[str, str]:
    # A webhook URL's `?token=` (or any credential a provider echoes back) is no part of the record.
    return {name: value for name, value in fields.items() if not _SECRET_FIELD.search(name)}


async def store_callback(
    request: web.Request, endpoint: str, kind: str, call_sid: str, key: str, fields: dict[str, str]
) -> bool:
    """Store a callback in the outbox before the provider hears 200; False for a repeat. A failure to
    store is a 500, so the provider retries rather than the record being lost."""
    fields = _kept_fields(fields)
    request.app[REGISTRY].facts.record_callback(call_sid, kind, fields, key)
    try:
        stored = await request.app[OUTBOX].add(
            key,
            call_sid,
            "callback",
            f"/v1/calls/{path_segment(call_sid)}/callbacks",
            {"kind": kind, "fields": fields},
        )
    except Exception as exc:  # RecordNotStored after its retries, or a bug: the provider retries
        logger.error("could not store %s (%s); answering 500", key, exc, extra={"call_sid": call_sid})
        request.app[METRICS].webhooks.labels(endpoint=endpoint, result="error").inc()
        raise web.HTTPInternalServerError(text="could not store the callback; retry") from None
    request.app[METRICS].webhooks.labels(endpoint=endpoint, result="stored" if stored else "duplicate").inc()
    logger.info(
        "%s callback %s", kind, "stored" if stored else "duplicate ignored", extra={"call_sid": call_sid}
    )
    return stored
