"""The outbox: every call record is written to SQLite before anything else happens to it, then delivered.

Records go in under a stable idempotency key (a repeat is stored once) and are delivered in the background
with jittered exponential backoff, across outages, wrong keys, deploys and restarts. Only a record that can
never go through (the sink says "parked", keeps raising for it, or its payload is unreadable) is parked,
and stays in the file for `voicebridge outbox list|show|retry`. Rows are never deleted. SQLite runs on one
dedicated thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from voicebridge.backends.base import DeliveryResult, RecordSink
from voicebridge.records.outbox_rows import (
    COLUMNS,
    STATES,
    Condition,
    OutboxCounts,
    OutboxRecord,
    PayloadUnreadable,
    RecordNotFound,
    RecordNotStored,
    RecordState,
    count_rows,
    deliverable_condition,
    insert_row,
    lane_conditions,
    load_payload,
    open_database,
    record_attempt,
    record_from_row,
    requeue_rows,
    row_id,
    seconds_to_next_due,
)
from voicebridge.server.metrics import Metrics

__all__ = ["STATES", "Outbox", "OutboxRecord", "RecordNotFound"]

logger = logging.getLogger("voicebridge.outbox")

_P = ParamSpec("_P")
_T = TypeVar("_T")
# Failed attempts of one record logged at WARNING: the first, then every this many (the rest at DEBUG).
_LOG_EVERY = 20
# Waits before trying a failed insert again. SQLite's own busy timeout (5 s) has already waited out a
# writer by then; these cover a moment of disk full or I/O error, and keep a webhook's answer bounded.
_INSERT_RETRY_DELAYS_S = (0.1, 0.5, 2.0)
# A sink that raises for the same record this many times in a row is not going to stop (a key aiohttp
# refuses, a payload it cannot encode): the record is parked with the reason instead of retried forever.
_SINK_RAISES_TO_PARK = 3
# The node backend's own timeouts (connect 2 s, request 8 s by default) end a delivery far sooner; this
# bound is for a sink that hangs anyway, so one row cannot stall delivery of every other row.
DELIVERY_TIMEOUT_S = 60.0
# After an unexpected error in a delivery pass, wait this long before the next (a bug must not spin).
_PASS_ERROR_BACKOFF_S = 5.0


class Outbox:
    """Durable records with background delivery; `sink=None` keeps them locally (state "local").

    `sink` takes every kind of record but those `routes` names: a kind there goes to its own sink (the
    post-call report), or with None to none, so that its rows are kept and never handed to `sink`."""

    def __init__(
        self,
        path: Path,
        sink: RecordSink | None,
        *,
        routes: Mapping[str, RecordSink | None] | None = None,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 60.0,
        batch: int = 20,
        delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
        metrics: Metrics | None = None,
    ) -> None:
        self.path = path
        self._sink = sink
        self._routes = dict(routes or {})
        self._retry_base = retry_base_s
        self._retry_cap = retry_cap_s
        self._batch = batch
        self._delivery_timeout = delivery_timeout_s
        self._metrics = metrics
        # One thread owns the connection: sqlite3 objects stay on the thread that made them.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        # One delivery loop per sink (see _lanes), each woken by its own event.
        self._wakes: list[asyncio.Event] = []
        self._runners: list[asyncio.Task[None]] = []
        # Read by /health and the gauge at any time; refreshed off the loop after each delivery pass.
        self._counts = OutboxCounts()
        self._delivered = 0  # delivered rows, counted at open and tallied since
        # Row id -> how many times in a row the sink raised for it (see _SINK_RAISES_TO_PARK).
        self._sink_raises: dict[int, int] = {}
        if metrics is not None:
            for state in STATES:
                gauge = metrics.outbox_records.labels(state=state)
                gauge.set_function(lambda state=state: float(self._counts.by_state.get(state, 0)))

    async def open(self) -> None:
        """Create or open the database (WAL), and start delivering whatever an earlier run left pending."""
        self._db = await self._run(open_database, self.path)
        self._counts = await self._run(self._count_rows, None)
        self._delivered = self._counts.by_state.get("delivered", 0)
        for where, kinds in self._lanes():
            wake = asyncio.Event()
            self._wakes.append(wake)
            self._runners.append(
                asyncio.create_task(self._deliver_forever(where, kinds, wake), name="outbox-delivery")
            )

    async def close(self) -> None:
        """Stop delivering (a delivery in flight is abandoned and retried next run) and close the file."""
        for runner in self._runners:
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        self._runners, self._wakes = [], []
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def add(self, key: str, call_sid: str, kind: str, path: str, payload: dict[str, Any]) -> bool:
        """Store a record durably; False when a record with this key was already stored (a repeat).
        A failing insert is tried again a few times; RecordNotStored when it still fails."""
        state: RecordState = "pending" if self._sink_for(kind) is not None else "local"
        try:
            # ASCII: a lone surrogate (from a decoder or a provider's JSON) is escaped, not a UTF-8 error.
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
        except (TypeError, ValueError, RecursionError) as exc:  # never succeeds: no point retrying
            raise RecordNotStored(key, f"not JSON ({type(exc).__name__})") from None
        for delay in (*_INSERT_RETRY_DELAYS_S, None):
            try:
                inserted = await self._run(self._insert_blocking, key, call_sid, kind, path, body, state)
                break
            except sqlite3.OperationalError as exc:  # locked, busy, disk full, I/O error: may pass
                if delay is None:
                    raise RecordNotStored(key, f"{type(exc).__name__}: {exc}") from None
                logger.warning("outbox: storing %s failed (%s); trying again in %gs", key, exc, delay)
                await asyncio.sleep(delay)
            except (sqlite3.Error, ValueError) as exc:  # will fail the same way again
                raise RecordNotStored(key, f"{type(exc).__name__}: {exc}") from None
        if inserted:
            self._counts = self._counts.added(state, time.time())
            self._wake_all()
        return inserted

    def report_unstored(self, key: str, reason: str) -> None:
        """A record is lost: one ERROR line with its key (never its payload), counted."""
        if self._metrics is not None:
            self._metrics.records_unstored.inc()
        logger.error("outbox: could not store %s (%s); this record is lost", key, reason[:200])

    def _insert_blocking(self, key: str, call_sid: str, kind: str, path: str, body: str, state: str) -> bool:
        return insert_row(self._live, key, call_sid, kind, path, body, state)

    async def counts(self) -> dict[str, int]:
        """Rows by state, counted now (for `outbox list`)."""
        rows = await self._run(self._query, "SELECT state, COUNT(*) FROM records GROUP BY state", ())
        return {state: count for state, count in rows}

    def health(self) -> dict[str, Any]:
        """Rows by state and the oldest pending row's age, as of the last delivery pass (no I/O)."""
        return self._counts.health(time.time())

    async def _refresh_counts(self, delivered_now: int) -> None:
        # Tallied before the await: two lanes refreshing at once must not both add to the same old count.
        self._delivered += delivered_now
        self._counts = await self._run(self._count_rows, self._delivered)

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
        sql = f"SELECT {COLUMNS} FROM records {where} ORDER BY id LIMIT ?"
        return [record_from_row(row) for row in await self._run(self._query, sql, (*params, limit))]

    async def find(self, ref: str) -> OutboxRecord:
        """One record by its idempotency key, or by its row id (all digits); RecordNotFound if none."""
        found = await self._select("WHERE key = ? OR id = ?", (ref, row_id(ref)))
        if not found:
            raise RecordNotFound(ref)
        return found[0]

    async def retry(self, ref: str | None = None, every: RecordState = "parked") -> int:
        """Queue records for delivery now: one (by key or id, parked, pending or kept locally) or, with
        None, every one in state `every` (parked, or local). Returns how many; RecordNotFound for an
        unknown ref, ValueError when there is nothing to retry (delivered, or no backend takes records)."""
        if not self._delivers_any:
            raise ValueError(
                'records are kept locally: this backend takes no records (backend.kind = "node" does; '
                "then `outbox retry` sends local ones)"
            )
        if ref is None:
            if every not in ("parked", "local"):
                raise ValueError("only every parked or every local record can be queued at once")
            where, kinds = self._deliverable()
            count = await self._run(requeue_rows, self._live, "state = ?" + where, (every, *kinds))
        else:
            record = await self.find(ref)
            if record.state == "delivered":
                raise ValueError(f"record {record.key} is already delivered")
            if self._sink_for(record.kind) is None:
                raise ValueError(f"records of kind {record.kind!r} have nowhere to go in this config")
            count = await self._run(requeue_rows, self._live, "id = ?", (record.id,))
        if count:
            logger.info("outbox: %d record(s) queued for delivery again", count)
            await self._refresh_counts(0)
            self._wake_all()
        return int(count)

    def _count_rows(self, delivered: int | None) -> OutboxCounts:
        return count_rows(self._live, delivered)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._live.execute(sql, params).fetchall()

    @property
    def _live(self) -> sqlite3.Connection:
        """The open connection (used on the outbox's thread only)."""
        assert self._db is not None, "Outbox.open() was not called"
        return self._db

    async def _run(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    # --- delivery -----------------------------------------------------------------------------------

    def _sink_for(self, kind: str) -> RecordSink | None:
        return self._routes[kind] if kind in self._routes else self._sink

    @property
    def _delivers_any(self) -> bool:
        return self._sink is not None or any(sink is not None for sink in self._routes.values())

    def _deliverable(self) -> Condition:
        return deliverable_condition(self._sink is not None, self._routes_with_sinks(), tuple(self._routes))

    def _lanes(self) -> list[Condition]:
        # Each lane has its own delivery loop, so a report receiver that hangs holds up reports, never
        # the backend's records (nor they the reports).
        return lane_conditions(self._sink is not None, self._routes_with_sinks(), tuple(self._routes))

    def _wake_all(self) -> None:
        for wake in self._wakes:
            wake.set()

    def _routes_with_sinks(self) -> tuple[str, ...]:
        return tuple(kind for kind, sink in self._routes.items() if sink is not None)

    async def deliver_due(self) -> int:
        """Try every row that is due now, once, lane after lane; return how many were delivered."""
        return sum([await self._deliver_lane(where, kinds) for where, kinds in self._lanes()])

    async def _deliver_lane(self, where: str, kinds: tuple[str, ...]) -> int:
        rows = await self._run(
            self._query,
            "SELECT id, key, kind, path, payload, attempts FROM records"
            f" WHERE state = 'pending' AND next_attempt_at <= ?{where} ORDER BY id LIMIT ?",
            (time.time(), *kinds, self._batch),
        )
        delivered = 0
        for row_id_, key, kind, path, payload_text, attempts in rows:
            result, error = await self._attempt(row_id_, key, kind, path, payload_text)
            await self._run(self._record_attempt, row_id_, result, attempts + 1, error)
            delivered += result == "delivered"
            if result == "parked":
                logger.error(
                    "outbox: %s parked (%s); see `voicebridge outbox list`", key, error.replace("\n", " ")
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

    async def _attempt(
        self, row: int, key: str, kind: str, path: str, payload_text: str
    ) -> tuple[DeliveryResult, str]:
        """One delivery of one row: whatever the sink does, an answer for this row and nothing raised."""
        sink = self._sink_for(kind)
        assert sink is not None  # _deliverable() picks only rows some sink takes
        try:
            payload = load_payload(payload_text)
        except PayloadUnreadable as exc:  # sending it again cannot help; an operator can look at it
            return "parked", str(exc)
        try:
            async with asyncio.timeout(self._delivery_timeout):
                result = await sink.deliver(path, payload, key)
        except TimeoutError:
            return "retry", f"no answer within {self._delivery_timeout:g}s"
        except Exception as exc:  # a sink bug or a record it cannot send must not stop the others
            raised = self._sink_raises.get(row, 0) + 1
            why = f"the sink raised {type(exc).__name__}: {exc}"[:200]
            if raised < _SINK_RAISES_TO_PARK:
                self._sink_raises[row] = raised
                return "retry", why
            self._sink_raises.pop(row, None)
            return "parked", why
        self._sink_raises.pop(row, None)
        return result

    def _record_attempt(self, row: int, result: DeliveryResult, attempts: int, error: str) -> None:
        # Full jitter: many rows failing together must not retry in lockstep against a recovering backend.
        delay = random.uniform(0, min(self._retry_cap, self._retry_base * 2 ** min(attempts, 16)))
        record_attempt(self._live, row, result, attempts, error, delay)

    async def _deliver_forever(self, where: str, kinds: tuple[str, ...], wake: asyncio.Event) -> None:
        """One lane's delivery loop: its due rows, then a sleep until its next is due or a record comes."""
        while True:
            wake.clear()
            try:
                delivered = await self._deliver_lane(where, kinds)
                await self._refresh_counts(delivered)
                wait = await self._run(seconds_to_next_due, self._live, where, kinds)
            except Exception as exc:  # the file, or a bug: say so once per pass, wait, and go on
                logger.error("outbox delivery pass failed (%s: %s); trying again", type(exc).__name__, exc)
                await asyncio.sleep(min(self._retry_cap, _PASS_ERROR_BACKOFF_S))
                continue
            if wait is None or wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await wake.wait()
                except TimeoutError:
                    pass
