"""The outbox: every call record is written to SQLite before anything else happens to it, then delivered.

Conversation logs, cost records, call events and provider callbacks go in with a stable idempotency key
(a repeat of the same key is the same record, stored once). A background task delivers pending rows to
the backend with jittered exponential backoff; they survive backend outages, wrong keys, deploys and
daemon restarts. Only an answer that can never succeed (the sink says "parked") stops the retries, and a
parked row stays in the file for `voicebridge outbox list|show|retry`. Rows are never deleted. SQLite
runs on one dedicated thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

logger = logging.getLogger("voicebridge.outbox")

DeliveryResult = Literal["delivered", "parked", "retry"]
RecordState = Literal["pending", "delivered", "parked", "local"]
STATES: tuple[RecordState, ...] = ("pending", "parked", "delivered", "local")
# Failed attempts of one record logged at WARNING: the first, then every this many (the rest at DEBUG).
_LOG_EVERY = 20

_SCHEMA = """
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


@runtime_checkable
class RecordSink(Protocol):
    """Where records go: the business's backend (see docs/backend-api.md)."""

    async def deliver(
        self, path: str, payload: dict[str, Any], idempotency_key: str
    ) -> tuple[DeliveryResult, str]:
        """Deliver once: ("delivered", ""), ("retry", why) or ("parked", why) for a refusal for good."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One stored record."""

    id: int
    key: str
    call_sid: str
    kind: str
    path: str
    payload: dict[str, Any]
    state: RecordState
    attempts: int
    last_error: str = ""
    created_at: float = 0.0
    delivered_at: float | None = None

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


class RecordNotFound(LookupError):
    """No record has that key or id."""


_COLUMNS = "id, key, call_sid, kind, path, payload, state, attempts, last_error, created_at, delivered_at"


def _record(row: tuple[Any, ...]) -> OutboxRecord:
    return OutboxRecord(
        row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], row[8], row[9], row[10]
    )


class Outbox:
    """Durable records with background delivery; `sink=None` keeps them locally (state "local")."""

    def __init__(
        self,
        path: Path,
        sink: RecordSink | None,
        *,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 60.0,
        batch: int = 20,
    ) -> None:
        self.path = path
        self._sink = sink
        self._retry_base = retry_base_s
        self._retry_cap = retry_cap_s
        self._batch = batch
        # One thread owns the connection: sqlite3 objects stay on the thread that made them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Create or open the database (WAL), and start delivering whatever an earlier run left pending."""
        await self._run(self._open_blocking)
        if self._sink is not None:
            self._runner = asyncio.create_task(self._deliver_forever(), name="outbox-delivery")

    def _open_blocking(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a record acknowledged to the provider must survive a power cut, not just a crash.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        # Earlier versions marked any 4xx (a wrong key, a 404 during a deploy) `rejected` and gave up.
        # Those rows go back to pending: judged again by today's rule, a 400/422 is parked after one try.
        revived = db.execute(
            "UPDATE records SET state='pending', next_attempt_at=0 WHERE state='rejected'"
        ).rowcount
        if revived:
            logger.warning("outbox: %d record(s) an earlier version gave up on are pending again", revived)
        self._db = db

    async def close(self) -> None:
        """Stop delivering (a delivery in flight is abandoned and retried next run) and close the file."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def add(self, key: str, call_sid: str, kind: str, path: str, payload: dict[str, Any]) -> bool:
        """Store a record durably; False when a record with this key was already stored (a repeat)."""
        state: RecordState = "pending" if self._sink is not None else "local"
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        inserted = await self._run(self._insert_blocking, key, call_sid, kind, path, body, state)
        if inserted:
            self._wake.set()
        return inserted

    def _insert_blocking(self, key: str, call_sid: str, kind: str, path: str, body: str, state: str) -> bool:
        assert self._db is not None
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO records (key, call_sid, kind, path, payload, created_at, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, call_sid, kind, path, body, time.time(), state),
        )
        return cursor.rowcount == 1

    async def counts(self) -> dict[str, int]:
        """Rows by state (for /health and metrics)."""
        rows = await self._run(self._query, "SELECT state, COUNT(*) FROM records GROUP BY state", ())
        return {state: count for state, count in rows}

    async def records(self, call_sid: str | None = None) -> list[OutboxRecord]:
        """Stored records, oldest first (all, or one call's)."""
        where, params = ("WHERE call_sid = ?", (call_sid,)) if call_sid is not None else ("", ())
        return await self._select(where, params)

    async def listing(
        self, states: tuple[str, ...], call_sid: str | None = None, limit: int = 200
    ) -> list[OutboxRecord]:
        """Records in any of `states` (optionally one call's), oldest first, at most `limit`."""
        where = f"WHERE state IN ({','.join('?' * len(states))})"
        params: tuple[Any, ...] = states
        if call_sid is not None:
            where, params = where + " AND call_sid = ?", (*states, call_sid)
        return await self._select(where, params, limit)

    async def _select(self, where: str, params: tuple[Any, ...], limit: int = -1) -> list[OutboxRecord]:
        sql = f"SELECT {_COLUMNS} FROM records {where} ORDER BY id LIMIT ?"
        return [_record(row) for row in await self._run(self._query, sql, (*params, limit))]

    async def find(self, ref: str) -> OutboxRecord:
        """One record by its idempotency key, or by its row id (all digits); RecordNotFound if none."""
        found = await self._select("WHERE key = ? OR id = ?", (ref, _row_id(ref)))
        if not found:
            raise RecordNotFound(ref)
        return found[0]

    async def retry(self, ref: str | None = None) -> int:
        """Queue records for delivery now: one (by key or id, parked or pending) or, with None, every
        parked one. Returns how many; RecordNotFound for an unknown ref, ValueError when there is nothing
        to retry (delivered, or kept locally with no backend)."""
        if self._sink is None:
            raise ValueError("records are kept locally (no backend takes them): nothing to retry")
        if ref is None:
            count = await self._run(self._requeue_blocking, "state = 'parked'", ())
        else:
            record = await self.find(ref)
            if record.state not in ("parked", "pending"):
                raise ValueError(f"record {record.key} is {record.state}; only parked or pending ones retry")
            count = await self._run(self._requeue_blocking, "id = ?", (record.id,))
        if count:
            logger.info("outbox: %d record(s) queued for delivery again", count)
            self._wake.set()
        return int(count)

    def _requeue_blocking(self, condition: str, params: tuple[Any, ...]) -> int:
        assert self._db is not None
        sql = "UPDATE records SET state='pending', next_attempt_at=0 WHERE state IN ('parked','pending') AND "
        return int(self._db.execute(sql + condition, params).rowcount)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._db is not None
        return self._db.execute(sql, params).fetchall()

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # --- delivery -----------------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """Try every row that is due now, once; return how many were delivered."""
        assert self._sink is not None
        rows = await self._run(
            self._query,
            "SELECT id, key, path, payload, attempts FROM records"
            " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (time.time(), self._batch),
        )
        delivered = 0
        for row_id, key, path, payload, attempts in rows:
            try:
                result, error = await self._sink.deliver(path, json.loads(payload), key)
            except Exception as exc:  # a sink bug must not stop delivery of everything else
                result, error = "retry", f"the sink raised {type(exc).__name__}"
            await self._run(self._record_attempt, row_id, result, attempts + 1, error)
            delivered += result == "delivered"
            if result == "parked":
                logger.error(
                    "outbox: the backend refused %s for good (%s); parked, see `voicebridge outbox list`",
                    key,
                    error,
                )
            elif result == "retry":
                level = logging.WARNING if attempts % _LOG_EVERY == 0 else logging.DEBUG
                logger.log(
                    level,
                    "outbox: delivery of %s failed (%s), attempt %d; retrying",
                    key,
                    error,
                    attempts + 1,
                )
        return delivered

    def _record_attempt(self, row_id: int, result: DeliveryResult, attempts: int, error: str) -> None:
        assert self._db is not None
        now = time.time()
        if result == "delivered":
            self._db.execute(
                "UPDATE records SET state='delivered', attempts=?, delivered_at=?, last_error='' WHERE id=?",
                (attempts, now, row_id),
            )
        elif result == "parked":
            self._db.execute(
                "UPDATE records SET state='parked', attempts=?, last_error=? WHERE id=?",
                (attempts, error, row_id),
            )
        else:
            # Full jitter: many rows failing together must not retry in lockstep against a recovering backend.
            delay = random.uniform(0, min(self._retry_cap, self._retry_base * 2 ** min(attempts, 16)))
            self._db.execute(
                "UPDATE records SET attempts=?, next_attempt_at=?, last_error=? WHERE id=?",
                (attempts, now + delay, error, row_id),
            )

    async def _deliver_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.deliver_due()
                wait = await self._run(self._seconds_to_next_due)
            except sqlite3.Error as exc:
                logger.error("outbox database error: %s", exc)
                wait = self._retry_cap
            if wait is None or wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def _seconds_to_next_due(self) -> float | None:
        assert self._db is not None
        row = self._db.execute("SELECT MIN(next_attempt_at) FROM records WHERE state = 'pending'").fetchone()
        if row is None or row[0] is None:
            return None
        return max(0.0, row[0] - time.time())


def _row_id(ref: str) -> int:
    # Bounded: a 5,000-digit "id" is no row, and must not reach int()'s digit limit.
    return int(ref) if ref.isascii() and ref.isdigit() and len(ref) <= 18 else -1
