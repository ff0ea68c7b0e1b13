"""The outbox's rows: the table and the SQL that reads and writes it, one stored record as read back, and
the counts an operator watches."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voicebridge.backends.base import DeliveryResult

logger = logging.getLogger("voicebridge.outbox")

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


# A SQL condition to append to a WHERE (" AND ...", or "") and its parameters.
Condition = tuple[str, tuple[str, ...]]


def _kinds_in(kinds: tuple[str, ...], negate: bool = False) -> Condition:
    return f" AND kind {'NOT ' if negate else ''}IN ({','.join('?' * len(kinds))})", kinds


def lane_conditions(
    default_sink: bool, routed_with_sink: tuple[str, ...], routed: tuple[str, ...]
) -> list[Condition]:
    """The rows of each sink: one lane per routed kind that has a sink, and one for the default sink's
    kinds (all but the routed ones) when there is a default sink."""
    lanes = [_kinds_in((kind,)) for kind in routed_with_sink]
    if default_sink:
        lanes.append(_kinds_in(routed, negate=True) if routed else ("", ()))
    return lanes


def deliverable_condition(
    default_sink: bool, routed_with_sink: tuple[str, ...], routed: tuple[str, ...]
) -> Condition:
    """The rows some sink takes: a row none takes must not be picked up (it would be due again at once,
    every pass)."""
    if default_sink:
        kept = tuple(kind for kind in routed if kind not in routed_with_sink)
        return _kinds_in(kept, negate=True) if kept else ("", ())
    return _kinds_in(routed_with_sink) if routed_with_sink else (" AND 0", ())


# --- the SQL behind the outbox; each runs on the outbox's own thread, never on the event loop -------------


def open_database(path: Path) -> sqlite3.Connection:
    """Create or open the outbox file (WAL, synchronous FULL) with its table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # FULL: a record acknowledged to the provider must survive a power cut, not just a crash.
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    # Earlier versions marked any 4xx (a wrong key, a 404 during a deploy) `rejected` and gave up.
    # Those rows go back to pending: judged again by today's rule, a 400/422 is parked after one try.
    revived = db.execute(
        "UPDATE records SET state='pending', next_attempt_at=0 WHERE state='rejected'"
    ).rowcount
    if revived:
        logger.warning("outbox: %d record(s) an earlier version gave up on are pending again", revived)
    return db


def insert_row(
    db: sqlite3.Connection, key: str, call_sid: str, kind: str, path: str, body: str, state: str
) -> bool:
    """Store one record; False when a record with this key is already stored."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO records (key, call_sid, kind, path, payload, created_at, state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key, call_sid, kind, path, body, time.time(), state),
    )
    return cursor.rowcount == 1


def requeue_rows(db: sqlite3.Connection, condition: str, params: tuple[Any, ...]) -> int:
    """Make the undelivered rows matching `condition` due now; how many there were."""
    # A `local` row was stored while no backend took records; sent only when an operator asks.
    sql = (
        "UPDATE records SET state='pending', next_attempt_at=0"
        " WHERE state IN ('parked','pending','local') AND "
    )
    return int(db.execute(sql + condition, params).rowcount)


def record_attempt(
    db: sqlite3.Connection, row: int, result: DeliveryResult, attempts: int, error: str, retry_in_s: float
) -> None:
    """Write down one delivery attempt's outcome; a "retry" row is due again in `retry_in_s`."""
    now = time.time()
    if result == "delivered":
        db.execute(
            "UPDATE records SET state='delivered', attempts=?, delivered_at=?, last_error='' WHERE id=?",
            (attempts, now, row),
        )
    elif result == "parked":
        db.execute(
            "UPDATE records SET state='parked', attempts=?, last_error=? WHERE id=?", (attempts, error, row)
        )
    else:
        db.execute(
            "UPDATE records SET attempts=?, next_attempt_at=?, last_error=? WHERE id=?",
            (attempts, now + retry_in_s, error, row),
        )


def seconds_to_next_due(
    db: sqlite3.Connection, where: str = "", params: tuple[Any, ...] = ()
) -> float | None:
    """How long until the next pending row (of those `where` keeps) is due (0 if one is now); None when
    none is pending."""
    sql = f"SELECT MIN(next_attempt_at) FROM records WHERE state = 'pending'{where}"
    row = db.execute(sql, params).fetchone()
    if row is None or row[0] is None:
        return None
    return max(0.0, row[0] - time.time())
