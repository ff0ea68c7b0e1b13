"""The outbox: every call record is written to SQLite before anything else happens to it, then delivered.

Conversation logs, cost records, call events and provider callbacks go in with a stable idempotency key
(a repeat of the same key is the same record, stored once). A background task delivers pending rows to
the backend with jittered exponential backoff; they survive backend outages and daemon restarts, and
delivered rows are marked, never deleted. SQLite runs on one dedicated thread, never on the event loop.
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

DeliveryResult = Literal["delivered", "rejected", "retry"]
RecordState = Literal["pending", "delivered", "rejected", "local"]

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

    async def deliver(self, path: str, payload: dict[str, Any], idempotency_key: str) -> DeliveryResult: ...


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
        sql = "SELECT id, key, call_sid, kind, path, payload, state, attempts FROM records"
        params: tuple[Any, ...] = ()
        if call_sid is not None:
            sql += " WHERE call_sid = ?"
            params = (call_sid,)
        rows = await self._run(self._query, sql + " ORDER BY id", params)
        return [OutboxRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows]

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
                result = await self._sink.deliver(path, json.loads(payload), key)
                error = "" if result == "delivered" else result
            except Exception as exc:  # a sink bug must not stop delivery of everything else
                logger.warning("outbox delivery of %s raised %s", key, type(exc).__name__)
                result, error = "retry", type(exc).__name__
            await self._run(self._record_attempt, row_id, result, attempts + 1, error)
            delivered += result == "delivered"
            if result == "rejected":
                logger.error("backend refused %s for good; kept locally as rejected", key)
        return delivered

    def _record_attempt(self, row_id: int, result: DeliveryResult, attempts: int, error: str) -> None:
        assert self._db is not None
        now = time.time()
        if result == "delivered":
            self._db.execute(
                "UPDATE records SET state='delivered', attempts=?, delivered_at=?, last_error='' WHERE id=?",
                (attempts, now, row_id),
            )
        elif result == "rejected":
            self._db.execute(
                "UPDATE records SET state='rejected', attempts=?, last_error=? WHERE id=?",
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
