"""The outbox's rows: the table, one stored record as read back, and the counts an operator watches."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Literal

RecordState = Literal["pending", "delivered", "parked", "local"]
STATES: tuple[RecordState, ...] = ("pending", "parked", "delivered", "local")
# last_error of a row whose stored text is not a JSON object (a damaged file, a hand edit).
PAYLOAD_UNREADABLE = "payload unreadable"

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    call_sid TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS records_due ON records (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS records_call ON records (call_sid);
"""

COLUMNS = "id, key, call_sid, kind, path, payload, state, attempts, last_error, created_at, delivered_at"


class RecordNotStored(Exception):
    """A record could not be written to the outbox, even after retries; `key` says which."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class RecordNotFound(LookupError):
    """No record has that key or id."""


class PayloadUnreadable(ValueError):
    """A stored payload is not a JSON object."""


def load_payload(text: str) -> dict[str, Any]:
    """A stored payload as a dict; PayloadUnreadable for anything else (never a parser's own error)."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        raise PayloadUnreadable(PAYLOAD_UNREADABLE) from None
    if not isinstance(payload, dict):
        raise PayloadUnreadable(PAYLOAD_UNREADABLE)
    return payload


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One stored record. Its payload is parsed only when asked for, so one damaged row cannot break a
    listing of all of them."""

    id: int
    key: str
    call_sid: str
    kind: str
    path: str
    payload_text: str
    state: RecordState
    attempts: int
    last_error: str = ""
    created_at: float = 0.0
    delivered_at: float | None = None

    @property
    def payload(self) -> dict[str, Any]:
        """The stored payload; PayloadUnreadable when it is not a JSON object."""
        return load_payload(self.payload_text)

    def summary(self) -> dict[str, Any]:
        """The record without its payload (for listings)."""
        return {
            "id": self.id,
            "key": self.key,
            "call_sid": self.call_sid,
            "kind": self.kind,
            "path": self.path,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "delivered_at": self.delivered_at,
        }


def record_from_row(row: tuple[Any, ...]) -> OutboxRecord:
    return OutboxRecord(*row)


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """Rows by state and when the oldest pending one was stored, as of the last refresh."""

    by_state: dict[str, int] = field(default_factory=dict)
    oldest_pending_at: float | None = None

    def added(self, state: str, now: float) -> OutboxCounts:
        """The counts with one more row in `state`, stored at `now`."""
        oldest = self.oldest_pending_at
        if state == "pending" and oldest is None:
            oldest = now
        return OutboxCounts({**self.by_state, state: self.by_state.get(state, 0) + 1}, oldest)

    def health(self, now: float) -> dict[str, Any]:
        """For /health: each state's count and the oldest pending row's age in seconds (None if none)."""
        age = None if self.oldest_pending_at is None else round(max(0.0, now - self.oldest_pending_at), 1)
        return {**{state: self.by_state.get(state, 0) for state in STATES}, "oldest_pending_age_s": age}


def count_rows(db: sqlite3.Connection, delivered: int | None) -> OutboxCounts:
    """Counts from the file. Delivered rows only grow and are never touched again: counted once (with
    `delivered` None, at open), then the caller's own tally is used rather than scanning them each pass."""
    where = "" if delivered is None else "WHERE state IN ('pending', 'parked', 'local')"
    rows = db.execute(f"SELECT state, COUNT(*) FROM records {where} GROUP BY state").fetchall()
    by_state = {state: count for state, count in rows}
    if delivered is not None:
        by_state["delivered"] = delivered
    oldest = db.execute("SELECT MIN(created_at) FROM records WHERE state = 'pending'").fetchone()
    return OutboxCounts(by_state, oldest[0] if oldest else None)


def row_id(ref: str) -> int:
    # Bounded: a 5,000-digit "id" is no row, and must not reach int()'s digit limit.
    return int(ref) if ref.isascii() and ref.isdigit() and len(ref) <= 18 else -1
