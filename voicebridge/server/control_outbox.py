"""The outbox over the control socket: list, show and re-queue stored records (`voicebridge outbox`)."""

from __future__ import annotations

import logging
from typing import Any

from voicebridge.records.outbox import STATES, Outbox, RecordNotFound
from voicebridge.records.outbox_rows import PayloadUnreadable
from voicebridge.server.control_protocol import RequestError, brief, string_param

OUTBOX_OPERATIONS = ("outbox_list", "outbox_show", "outbox_retry")
# What `outbox list` shows unless asked otherwise: whatever has not reached the backend yet.
UNDELIVERED = ("pending", "parked")
MAX_LISTED = 1000

logger = logging.getLogger("voicebridge.control")


async def outbox_operation(outbox: Outbox | None, op: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run one outbox op; RequestError for a bad request, an unknown record or nothing to retry."""
    if outbox is None:
        raise RequestError("unavailable", "this daemon has no outbox open")
    if op == "outbox_list":
        states = _states(request.get("state", "undelivered"))
        call_sid = request.get("call_sid")
        if call_sid is not None and not isinstance(call_sid, str):
            raise RequestError("bad_request", "call_sid must be a string")
        limit = _limit(request.get("limit", 200))
        records = await outbox.listing(states, call_sid, limit)
        return {"records": [r.summary() for r in records], "counts": await outbox.counts()}
    if op == "outbox_show":
        ref = string_param(request, "record")
        try:
            record = await outbox.find(ref)
        except RecordNotFound:
            raise RequestError("unknown_record", f"no outbox record {brief(ref)}") from None
        try:
            payload: dict[str, Any] | None = record.payload
        except PayloadUnreadable:  # shown as it is stored, so an operator can see what is wrong
            return {**record.summary(), "payload": None, "payload_text": record.payload_text[:4096]}
        return {**record.summary(), "payload": payload}
    every = "local" if request.get("all_local") is True else "parked"
    everything = request.get("all_parked") is True or every == "local"
    ref = None if everything else string_param(request, "record")
    try:
        count = await outbox.retry(ref, every)
    except RecordNotFound:
        raise RequestError("unknown_record", f"no outbox record {brief(ref)}") from None
    except ValueError as exc:
        raise RequestError("not_retryable", str(exc)[:200]) from None
    logger.info("outbox retry requested over the control socket: %s", f"all {every}" if everything else ref)
    return {"queued": count}


def _states(value: Any) -> tuple[str, ...]:
    if value == "undelivered":
        return UNDELIVERED
    if value == "all":
        return STATES
    if value in STATES:
        return (value,)
    raise RequestError("bad_request", f"state must be one of undelivered, all, {', '.join(STATES)}")


def _limit(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= MAX_LISTED:
        raise RequestError("bad_request", f"limit must be an integer from 1 to {MAX_LISTED}")
    return value
