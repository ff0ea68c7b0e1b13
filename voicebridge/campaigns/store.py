"""Campaigns kept in SQLite (<state_dir>/campaigns.sqlite3), so a restart resumes where it was.

One dedicated thread owns the connection (as the outbox does): nothing blocks the event loop, and the
SQL (store_sql.py) runs in the order it was asked for.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

from voicebridge.campaigns import store_sql
from voicebridge.campaigns.model import CampaignOptions, CampaignState
from voicebridge.campaigns.numbers_csv import ListEntry

_P = ParamSpec("_P")
_T = TypeVar("_T")


class UnknownCampaign(LookupError):
    """No campaign has that id."""


@dataclass(frozen=True, slots=True)
class Campaign:
    id: int
    name: str
    state: CampaignState
    options: CampaignOptions
    created_at: float
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class DueNumber:
    id: int
    campaign_id: int
    number: str
    context: MappingProxyType[str, str]
    attempts: int


def _campaign(row: tuple[Any, ...]) -> Campaign:
    return Campaign(row[0], row[1], row[2], store_sql.options_from_row(row), row[12], row[13])


def _due(row: tuple[Any, ...]) -> DueNumber:
    try:
        context = json.loads(row[3])
    except ValueError:
        context = {}
    if not isinstance(context, dict):
        context = {}
    return DueNumber(row[0], row[1], row[2], MappingProxyType(context), row[4])


class CampaignStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaigns")
        self._db: sqlite3.Connection | None = None

    async def open(self, now: float) -> int:
        """Open the file and settle what a previous run left mid-attempt; how many rows were settled."""
        self._db = await self._run(store_sql.open_database, self.path)
        return await self._sql(store_sql.settle_interrupted, now)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def _sql(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._db is None:
            raise RuntimeError("campaign store is not open")
        return await self._run(fn, self._db, *args)

    async def create(self, name: str, options: CampaignOptions, entries: list[ListEntry]) -> int:
        return await self._sql(store_sql.insert_campaign, name, options, entries)

    async def campaigns(self, states: tuple[str, ...] = ()) -> list[Campaign]:
        """Every campaign, or those in `states`."""
        rows = await self._sql(store_sql.campaign_rows, None, states)
        return [_campaign(row) for row in rows]

    async def campaign(self, campaign: int) -> Campaign:
        rows = await self._sql(store_sql.campaign_rows, campaign)
        if not rows:
            raise UnknownCampaign(campaign)
        return _campaign(rows[0])

    async def set_state(self, campaign: int, state: CampaignState, allowed_from: tuple[str, ...]) -> bool:
        return await self._sql(store_sql.set_campaign_state, campaign, state, allowed_from)

    async def next_due(self, campaign: int, now: float) -> DueNumber | None:
        row = await self._sql(store_sql.next_due, campaign, now)
        return None if row is None else _due(row)

    async def begin_attempt(self, number: int, max_attempts: int) -> int | None:
        return await self._sql(store_sql.begin_attempt, number, max_attempts)

    async def undo_attempt(self, number: int, retry_at: float) -> None:
        await self._sql(store_sql.undo_attempt, number, retry_at)

    async def mark_in_call(self, number: int, call_sid: str) -> None:
        await self._sql(store_sql.mark_in_call, number, call_sid)

    async def settle(
        self, number: int, status: str, answered_by: str, outcome: str, retry_at: float | None
    ) -> None:
        await self._sql(store_sql.settle_number, number, status, answered_by, outcome, retry_at)

    async def skip(self, number: int, outcome: str) -> None:
        await self._sql(store_sql.skip_number, number, outcome)

    async def open_numbers(self, campaign: int) -> int:
        return await self._sql(store_sql.open_numbers, campaign)

    async def progress(self, campaign: int) -> dict[str, Any]:
        return await self._sql(store_sql.progress, campaign)

    async def numbers(self, campaign: int, limit: int) -> list[dict[str, Any]]:
        return await self._sql(store_sql.number_rows, campaign, limit)
