"""What providers told us about calls, outside the call's own stream: status and recording callbacks,
Passthru reports, and where a transferred call is to be dialled.

Kept in memory for recent calls so that a finished call shows them (`calls show`) and Exotel's Connect
applet learns its destination; the outbox holds the durable copy of every callback. Each fact is keyed by
call sid and idempotent: a provider's retry changes nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from voicebridge.records.call_records import CallRecord

# Facts are kept for this many recent sids; the outbox holds the durable copy, and a daemon running for
# months must not keep one entry per call it ever saw. Twice the registry's FINISHED_KEPT, so every finished
# call still shown has its facts.
FACTS_KEPT = 2000
V = TypeVar("V")


class ProviderFacts:
    """Callbacks, recording URLs and transfer destinations of the most recent FACTS_KEPT calls."""

    def __init__(self) -> None:
        self._callbacks: OrderedDict[str, dict[str, dict[str, str]]] = OrderedDict()
        self._recordings: OrderedDict[str, str] = OrderedDict()
        self._transfers: OrderedDict[str, str] = OrderedDict()

    def record_callback(self, call_sid: str, kind: str, fields: dict[str, str], dedupe_key: str = "") -> bool:
        """Keep a callback once per `dedupe_key` (the outbox's key for it), else per (kind, status); False
        when it was a retry."""
        key = dedupe_key or (
            f"{kind}:{fields.get('Status') or fields.get('EventType') or fields.get('RecordingUrl', '')}"
        )
        seen = _remember(self._callbacks, call_sid, {})
        if key in seen:
            return False
        seen[key] = {"kind": kind, **fields}
        if kind == "recording" and fields.get("RecordingUrl"):
            _remember(self._recordings, call_sid, fields["RecordingUrl"], replace=True)
        return True

    def callbacks(self, call_sid: str) -> list[dict[str, str]]:
        return list(self._callbacks.get(call_sid, {}).values())

    def set_transfer(self, call_sid: str, number: str) -> None:
        _remember(self._transfers, call_sid, number, replace=True)

    def transfer_destination(self, call_sid: str) -> str | None:
        """Where the Connect applet should dial for this call, if we transferred it."""
        return self._transfers.get(call_sid)

    def attach(self, record: CallRecord) -> CallRecord:
        """`record` with what is known of its call: callbacks, recording URL, transfer destination. Facts
        that arrive after the call ended are attached when it is next looked at."""
        if (seen := self._callbacks.get(record.call_sid)) is not None:
            record.status_callbacks = list(seen.values())
        record.recording_url = self._recordings.get(record.call_sid, record.recording_url)
        record.transfer_to = self._transfers.get(record.call_sid, record.transfer_to)
        return record


def _remember(table: OrderedDict[str, V], key: str, value: V, replace: bool = False) -> V:
    """table[key] (set to `value` if new or `replace`), newest last; the oldest beyond FACTS_KEPT go."""
    if replace or key not in table:
        table[key] = value
    table.move_to_end(key)
    while len(table) > FACTS_KEPT:
        table.popitem(last=False)
    return table[key]
