"""The post-call report (`[report] url`, docs/post-call-report.md): one signed JSON POST per call, whatever
`backend.kind` is.

The report is an outbox row of its own kind (REPORT_KIND), stored with the call's other records and routed
by the outbox to `ReportSink` rather than to the backend, so it has the outbox's durability, retries and
idempotency key. Each attempt is signed afresh: the timestamp says when it was sent, so a receiver can
refuse a replayed request while a report held back by an outage still verifies when it finally arrives.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from voicebridge.backends.base import CallInfo, DeliveryResult
from voicebridge.config.schema import ReportConfig

logger = logging.getLogger("voicebridge.report")

# The outbox row kind (and path) of a report; the outbox sends rows of this kind to the report sink only.
REPORT_KIND = "report"
REPORT_VERSION = 1
TIMESTAMP_HEADER = "X-Voicebridge-Timestamp"
SIGNATURE_HEADER = "X-Voicebridge-Signature"
# Answers that no retry can change: the report itself is malformed (the node backend's rule too). 413 is
# retried like the backend's records are: it passes once the receiver's body limit is raised.
PERMANENT_STATUSES = frozenset({400, 422})
# What an unreachable, hanging or dropping receiver looks like.
TRANSIENT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


def call_context(info: CallInfo) -> dict[str, str]:
    """The call's context (the provider's custom parameters, already bounded) as the report carries it."""
    return dict(info.context)


def call_report(
    info: CallInfo,
    *,
    report_id: str,
    session: str,
    outcome: str,
    started_at: float,
    duration_s: float,
    turns: list[dict[str, Any]],
    cost: dict[str, Any],
    recording_path: str,
) -> dict[str, Any]:
    """The report's payload. `turns` are the conversation record's (bot lines with `heard`): keypresses
    are moved out of them into `dtmf`, so every turn has a `text`."""
    return {
        "report_version": REPORT_VERSION,
        "report_id": report_id,
        "call_sid": info.call_sid,
        "session": session,
        "provider": info.provider,
        "from": info.from_number,
        "to": info.to_number,
        "context": call_context(info),
        "direction": info.direction,
        "outcome": outcome,
        "started_at": round(started_at, 3),
        "ended_at": round(started_at + duration_s, 3),
        "duration_s": round(duration_s, 3),
        "turns": [turn for turn in turns if "dtmf" not in turn],
        "dtmf": [{"digit": turn["dtmf"], "at": turn.get("at")} for turn in turns if "dtmf" in turn],
        "cost": cost,
        "recording_path": recording_path or None,
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The body as sent and signed: compact JSON, ASCII (a lone surrogate is escaped, not an error)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: `v1=` and the hex HMAC-SHA256 of `<timestamp>.<body>`."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, idempotency_key: str, now: float) -> dict[str, str]:
    """The headers of one attempt: the same key every attempt, a timestamp and signature of this one."""
    timestamp = str(int(now))
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def _reason(exc: BaseException, timeout: float) -> str:
    """A short description of a transport failure; never str(exc), which can carry request details."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    return type(exc).__name__


class ReportSink:
    """Takes the outbox's report rows to `[report] url` (a RecordSink); its own aiohttp session, so a slow
    report receiver never holds up the backend's connections, nor the backend's breaker the reports."""

    def __init__(self, config: ReportConfig, clock: Callable[[], float] = time.time) -> None:
        self._url = config.url
        self._secret = config.secret.get_secret_value()
        self._timeout = config.timeout_s
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session (idempotent)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def deliver(
        self, path: str, payload: dict[str, Any], idempotency_key: str
    ) -> tuple[DeliveryResult, str]:
        """POST one report once (`path` is the row's kind; the URL is the config's): delivered on 2xx,
        parked on PERMANENT_STATUSES or a request aiohttp refuses to make, else retried by the outbox."""
        if self._session is None:
            return "retry", "the report sink is not started"
        try:
            body = encode(payload)
            headers = signed_headers(self._secret, body, idempotency_key, self._clock())
            # No redirects: a signed report goes where the config says, or is retried.
            async with self._session.post(
                self._url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except TRANSIENT_ERRORS as exc:
            logger.debug("report %s not delivered: %s", idempotency_key, _reason(exc, self._timeout))
            return "retry", _reason(exc, self._timeout)
        except (ValueError, TypeError) as exc:
            # aiohttp refuses the request itself (a control character in the key): it will again.
            return "parked", f"cannot be sent: {type(exc).__name__}"
        except aiohttp.ClientError as exc:
            return "retry", type(exc).__name__
        if 200 <= status < 300:
            return "delivered", ""
        return ("parked" if status in PERMANENT_STATUSES else "retry"), f"HTTP {status}"
