"""The campaigns file's tables and the SQL that reads and writes them. Each function runs on the store's
own thread (store.py), never on the event loop.

The one rule everything else rests on: an attempt is written (attempts+1, state `dialling`) and committed
BEFORE its dial request is sent. A crash between the two can only under-dial: on the next start the row
is found in `dialling`/`in_call` and settled (settle_interrupted), never dialled beyond max_attempts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from voicebridge.campaigns.hours import CallingHours
from voicebridge.campaigns.model import CampaignOptions
from voicebridge.campaigns.numbers_csv import ListEntry

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    rate_per_minute REAL NOT NULL,
    hours_start TEXT NOT NULL,
    hours_end TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    max_attempts INTEGER NOT NULL,
    retry_base_s REAL NOT NULL,
    retry_cap_s REAL NOT NULL,
    from_number TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS numbers (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    line INTEGER NOT NULL,
    number TEXT NOT NULL,
    context TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    call_sid TEXT NOT NULL DEFAULT '',
    last_status TEXT NOT NULL DEFAULT '',
    answered_by TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL DEFAULT 0,
    UNIQUE (campaign_id, number)
);
CREATE INDEX IF NOT EXISTS numbers_due ON numbers (campaign_id, state, next_attempt_at);
"""
CAMPAIGN_COLUMNS = (
    "id, name, state, concurrency, rate_per_minute, hours_start, hours_end, time_zone, max_attempts,"
    " retry_base_s, retry_cap_s, from_number, created_at, finished_at"
)
NUMBER_COLUMNS = "id, campaign_id, number, context, attempts"


class StoreTooNew(Exception):
    """The file was written by a newer voicebridge (a higher schema version)."""


def open_database(path: Path) -> sqlite3.Connection:
    """Create or open the campaigns file (WAL, synchronous FULL: an attempt written must survive a power
    cut, or a number could be dialled again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        db.close()
        raise StoreTooNew(f"{path} has schema {version}; this voicebridge knows {SCHEMA_VERSION}")
    db.executescript(SCHEMA)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return db


def insert_campaign(
    db: sqlite3.Connection, name: str, options: CampaignOptions, entries: list[ListEntry]
) -> int:
    """One campaign and all its numbers, in one transaction (a crash leaves all or nothing)."""
    hours = options.hours
    db.execute("BEGIN IMMEDIATE")
    try:
        cursor = db.execute(
            f"INSERT INTO campaigns ({CAMPAIGN_COLUMNS}) VALUES (NULL, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, NULL)",
            (
                name,
                options.concurrency,
                options.rate_per_minute,
                hours.start,
                hours.end,
                hours.zone,
                options.max_attempts,
                options.retry_base_s,
                options.retry_cap_s,
                options.from_number,
                time.time(),
            ),
        )
        campaign = int(cursor.lastrowid or 0)
        db.executemany(
            "INSERT OR IGNORE INTO numbers (campaign_id, line, number, context) VALUES (?, ?, ?, ?)",
            [(campaign, e.line, e.number, json.dumps(dict(e.context))) for e in entries],
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return campaign


def options_from_row(row: tuple[Any, ...]) -> CampaignOptions:
    return CampaignOptions(
        concurrency=row[3],
        rate_per_minute=row[4],
        hours=CallingHours(row[5], row[6], row[7]),
        max_attempts=row[8],
        retry_base_s=row[9],
        retry_cap_s=row[10],
        from_number=row[11],
    )


def campaign_rows(
    db: sqlite3.Connection, campaign: int | None, states: tuple[str, ...] = ()
) -> list[tuple[Any, ...]]:
    if campaign is None:
        where = f" WHERE state IN ({','.join('?' * len(states))})" if states else ""
        return db.execute(f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns{where} ORDER BY id", states).fetchall()
    return db.execute(f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id=?", (campaign,)).fetchall()


def set_campaign_state(
    db: sqlite3.Connection, campaign: int, state: str, allowed_from: tuple[str, ...]
) -> bool:
    """Move a campaign to `state` if it is in one of `allowed_from`; False when it was not."""
    finished = time.time() if state in ("cancelled", "finished") else None
    marks = ",".join("?" * len(allowed_from))
    cursor = db.execute(
        f"UPDATE campaigns SET state=?, finished_at=? WHERE id=? AND state IN ({marks})",
        (state, finished, campaign, *allowed_from),
    )
    if cursor.rowcount and state == "cancelled":
        db.execute(
            "UPDATE numbers SET state='skipped', outcome='cancelled', updated_at=? WHERE campaign_id=?"
            " AND state='pending'",
            (time.time(), campaign),
        )
    return cursor.rowcount == 1


def next_due(db: sqlite3.Connection, campaign: int, now: float) -> tuple[Any, ...] | None:
    return db.execute(
        f"SELECT {NUMBER_COLUMNS} FROM numbers WHERE campaign_id=? AND state='pending'"
        " AND next_attempt_at<=? ORDER BY next_attempt_at, id LIMIT 1",
        (campaign, now),
    ).fetchone()


def begin_attempt(db: sqlite3.Connection, number: int, max_attempts: int) -> int | None:
    """Count one attempt before it is made; the attempt's number, or None when none may be made."""
    cursor = db.execute(
        "UPDATE numbers SET attempts=attempts+1, state='dialling', updated_at=? WHERE id=?"
        " AND state='pending' AND attempts<?",
        (time.time(), number, max_attempts),
    )
    if cursor.rowcount != 1:
        return None
    return int(db.execute("SELECT attempts FROM numbers WHERE id=?", (number,)).fetchone()[0])


def undo_attempt(db: sqlite3.Connection, number: int, retry_at: float) -> None:
    """The dial was refused before reaching any provider (no capacity): it was no attempt."""
    db.execute(
        "UPDATE numbers SET attempts=attempts-1, state='pending', next_attempt_at=?, updated_at=?"
        " WHERE id=? AND state='dialling'",
        (retry_at, time.time(), number),
    )


def mark_in_call(db: sqlite3.Connection, number: int, call_sid: str) -> None:
    db.execute(
        "UPDATE numbers SET state='in_call', call_sid=?, updated_at=? WHERE id=? AND state='dialling'",
        (call_sid, time.time(), number),
    )


def settle_number(
    db: sqlite3.Connection,
    number: int,
    status: str,
    answered_by: str,
    outcome: str,
    retry_at: float | None,
) -> None:
    """An attempt ended: pending again at `retry_at`, or settled with `outcome` (done when answered)."""
    now = time.time()
    if retry_at is not None:
        db.execute(
            "UPDATE numbers SET state='pending', next_attempt_at=?, last_status=?, updated_at=? WHERE id=?",
            (retry_at, status, now, number),
        )
        return
    state = "done" if status == "completed" else "failed"
    db.execute(
        "UPDATE numbers SET state=?, last_status=?, answered_by=?, outcome=?, updated_at=? WHERE id=?",
        (state, status, answered_by, outcome, now, number),
    )


def skip_number(db: sqlite3.Connection, number: int, outcome: str) -> None:
    """Never dialled, for good (on the DNC list, refused): no attempt is counted."""
    db.execute(
        "UPDATE numbers SET state='skipped', outcome=?, updated_at=? WHERE id=? AND state IN"
        " ('pending','dialling')",
        (outcome, time.time(), number),
    )


def settle_interrupted(db: sqlite3.Connection, now: float) -> int:
    """Rows a previous run left mid-attempt (`dialling`: the request may or may not have been sent;
    `in_call`: the provider took it, its end was never heard). Either way the attempt stays counted, and
    the number is retried after its backoff if attempts remain, else settled as `interrupted`: the
    choice that can never exceed max_attempts, at the cost of perhaps calling someone whose call was
    cut by the restart once more."""
    rows = db.execute(
        "SELECT n.id, n.attempts, c.max_attempts, c.retry_base_s, c.retry_cap_s FROM numbers n"
        " JOIN campaigns c ON c.id = n.campaign_id WHERE n.state IN ('dialling','in_call')"
    ).fetchall()
    for number, attempts, max_attempts, base, cap in rows:
        if attempts < max_attempts:
            retry_at = now + min(cap, base * 2 ** max(0, attempts - 1))
            settle_number(db, number, "interrupted", "", "", retry_at)
        else:
            settle_number(db, number, "interrupted", "", "interrupted", None)
    return len(rows)


def open_numbers(db: sqlite3.Connection, campaign: int) -> int:
    row = db.execute(
        "SELECT COUNT(*) FROM numbers WHERE campaign_id=? AND state IN ('pending','dialling','in_call')",
        (campaign,),
    ).fetchone()
    return int(row[0])


def progress(db: sqlite3.Connection, campaign: int) -> dict[str, Any]:
    """What `campaign status` shows: numbers by state and outcome, attempts made, answered."""
    states = dict(
        db.execute("SELECT state, COUNT(*) FROM numbers WHERE campaign_id=? GROUP BY state", (campaign,))
    )
    outcomes = dict(
        db.execute(
            "SELECT outcome, COUNT(*) FROM numbers WHERE campaign_id=? AND outcome!='' GROUP BY outcome",
            (campaign,),
        )
    )
    attempts = db.execute(
        "SELECT COALESCE(SUM(attempts),0) FROM numbers WHERE campaign_id=?", (campaign,)
    ).fetchone()[0]
    return {"numbers": states, "outcomes": outcomes, "attempts": int(attempts)}


def number_rows(db: sqlite3.Connection, campaign: int, limit: int) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT number, state, attempts, last_status, answered_by, outcome, line FROM numbers"
        " WHERE campaign_id=? ORDER BY id LIMIT ?",
        (campaign, limit),
    ).fetchall()
    keys = ("number", "state", "attempts", "last_status", "answered_by", "outcome", "line")
    return [dict(zip(keys, row, strict=True)) for row in rows]
