"""Audio WebSockets behind the door: signed upgrades (Twilio's X-Twilio-Signature over the stream URL), the
existing seeded fuzzer's connection plans run through them, idle sockets, and reading what comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from tests.support.fuzz_messages import WireFuzzer
from tests.wire.test_fuzz import CONNECTION_TIMEOUT_S, FuzzStats, run_ws_plan
from voicebridge.sim.daemon import DaemonProcess
from voicebridge.telephony.twilio import twilio_signature


def signed_upgrade_headers(daemon: DaemonProcess, auth_token: str, query: str = "") -> dict[str, str]:
    """Headers for GET /ws/stream[?query] that pass the Twilio signature check (no form on an upgrade)."""
    # What Twilio signs and the daemon checks without public_url: the ws:// URL of the upgrade (#14 review 8).
    url = str(URL(f"{daemon.ws}/ws/stream" + (f"?{query}" if query else "")))
    return {"X-Twilio-Signature": twilio_signature(auth_token, url, {})}


async def signed_fuzz_worker(
    daemon: DaemonProcess, fuzzer: WireFuzzer, stats: FuzzStats, auth_token: str, target: int, deadline: float
) -> None:
    """Connection after connection, each one of the fuzzer's plans, until `target` messages or `deadline`.

    Raw-frame plans are left out: they are the same bytes behind or without the door, and test_fuzz.py
    sends them to an open daemon."""
    while stats.sent < target and time.monotonic() < deadline:
        plan = fuzzer.plan()
        if plan.raw:
            continue
        stats.scenarios[plan.scenario] += 1
        headers = signed_upgrade_headers(daemon, auth_token, plan.query)
        async with aiohttp.ClientSession(headers=headers) as session:
            try:
                await asyncio.wait_for(
                    run_ws_plan(session, daemon, plan, stats), timeout=CONNECTION_TIMEOUT_S
                )
            except TimeoutError:
                stats.hangs.append(plan.scenario)
            except (aiohttp.ClientError, ConnectionError, OSError) as exc:
                stats.errors[f"{plan.scenario}:{type(exc).__name__}"] += 1


@dataclass
class Outbound:
    """What the daemon sent on one socket: decoded text messages, their sizes, how the socket ended."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    largest: int = 0
    close_code: int | None = None
    closed: bool = False

    def media(self) -> list[dict[str, Any]]:
        return [message for message in self.messages if message.get("event") == "media"]


async def collect(
    ws: aiohttp.ClientWebSocketResponse, seconds: float, keep_alive: str = "", max_messages: int = 400
) -> Outbound:
    """Read for up to `seconds` (or until closed, or `max_messages`), sending `keep_alive` every 100 ms."""
    seen = Outbound()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    next_keep_alive = loop.time()
    while (left := deadline - loop.time()) > 0 and len(seen.messages) < max_messages:
        if keep_alive and loop.time() >= next_keep_alive and not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):  # closed under us: seen next read
                await ws.send_str(keep_alive)
            next_keep_alive = loop.time() + 0.1
        try:
            message = await ws.receive(timeout=min(left, 0.1))
        except TimeoutError:
            continue
        if message.type is aiohttp.WSMsgType.TEXT:
            seen.largest = max(seen.largest, len(message.data))
            try:
                decoded = json.loads(message.data)
            except ValueError:
                decoded = {"event": "not json"}
            seen.messages.append(decoded if isinstance(decoded, dict) else {"event": "not an object"})
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            seen.closed = True
            break
        elif message.type is aiohttp.WSMsgType.ERROR:
            seen.closed = True
            break
    seen.close_code = ws.close_code
    seen.closed = seen.closed or ws.closed
    return seen


class IdleStreams:
    """Signed stream sockets that never send `start` (some send only `connected`): do they get cut?"""

    def __init__(self, daemon: DaemonProcess, auth_token: str) -> None:
        self._daemon = daemon
        self._auth_token = auth_token
        self._session: aiohttp.ClientSession | None = None
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []
        self._watchers: list[asyncio.Task[None]] = []
        self.refused: list[int] = []
        self.opened_at = 0.0

    async def open(self, count: int) -> None:
        self._session = aiohttp.ClientSession(headers=signed_upgrade_headers(self._daemon, self._auth_token))
        self.opened_at = time.monotonic()
        for index in range(count):
            try:
                ws = await self._session.ws_connect(f"{self._daemon.ws}/ws/stream")
            except aiohttp.WSServerHandshakeError as refusal:
                self.refused.append(refusal.status)
                continue
            if index % 3 == 0:
                await ws.send_str(json.dumps({"event": "connected"}))
            self._sockets.append(ws)
            # Something must read, or a close from the daemon is never seen.
            self._watchers.append(asyncio.create_task(self._drain(ws)))

    @staticmethod
    async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:
            pass

    @property
    def still_open(self) -> int:
        return sum(1 for ws in self._sockets if not ws.closed)

    @property
    def opened(self) -> int:
        return len(self._sockets)

    async def close(self) -> None:
        for ws in self._sockets:
            if not ws.closed:
                await ws.close()
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
