"""Watching a daemon from outside: its log read incrementally, its Prometheus metrics, its /health."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.wire.test_fuzz import parse_metrics

# Lines of a traceback that are not its exception line (frames are indented).
NOT_EXCEPTION = ("Traceback", "During handling", "The above exception", " ", "\t", "^", "~")
# Every log line starts with its time (text format); a traceback's lines belong to the record above them.
LOG_RECORD = re.compile(r"^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", re.MULTILINE)


@dataclass
class LogWatch:
    """Reads what a log file gained since the last read (the daemon appends; we never re-read it all)."""

    path: Path
    offset: int = 0

    def read_new(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        return data.decode(errors="replace")


def tracebacks(text: str) -> list[str]:
    """One line per log record with a traceback in `text`: the exception that escaped, and its message."""
    found: list[str] = []
    for record in LOG_RECORD.split(text):
        if "Traceback" not in record:
            continue
        # A chained traceback ends with the exception that escaped: the last exception line wins.
        head, *rest = record.splitlines()
        lines = [line for line in rest if line and not line.startswith(NOT_EXCEPTION)]
        # Where it was logged ("ERROR asyncio [-] Task exception was never retrieved") says what died.
        where = head.split(" ", 2)[-1][:100]
        found.append(f"{lines[-1][:160] if lines else '?'} (logged as: {where})")
    return found


def labelled(metrics: dict[str, float], name: str) -> dict[str, float]:
    """One labelled counter's samples: {label text: value}."""
    prefix = name + "{"
    return {key[len(prefix) : -1]: value for key, value in metrics.items() if key.startswith(prefix)}


@dataclass(frozen=True)
class Management:
    """The daemon's management door, always with its bearer token (our own checks must not be refused)."""

    http: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def metrics(self) -> dict[str, float]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.http}/metrics", headers=self.headers) as response,
        ):
            assert response.status == 200, f"GET /metrics with the token answered {response.status}"
            return parse_metrics(await response.text())

    async def health(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.http}/health", headers=self.headers) as response,
        ):
            assert response.status == 200, f"GET /health with the token answered {response.status}"
            document: dict[str, Any] = await response.json()
            return document
