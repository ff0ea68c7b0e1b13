"""A local fake of the business backend described in docs/backend-api.md (contract version 1).

It checks `X-Api-Key` (401 on a wrong or missing key), answers caller messages as NDJSON lines when the
request accepts them (else one JSON object), and stores records once per `Idempotency-Key`. Tests script
failures: `statuses` are answered first, one per request, before normal handling, and `record_status`
is what record deliveries get (switch it while a daemon runs, e.g. 401 for a while, then 200).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

NDJSON = "application/x-ndjson"


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    peer_port: int  # the client's side of the connection: the same port means a reused connection


@dataclass
class FakeNodeApi:
    """Async context manager serving the fake on a free loopback port; records every request."""

    api_key: str = "node-key"
    deltas: list[str] = field(default_factory=lambda: ["We open at nine", " on Sunday. Anything else?"])
    action: dict[str, Any] | None = None
    stream: bool = True  # answer NDJSON when the request accepts it
    end_stream: bool = True  # send the final {"done": true} line
    delay: float = 0.0  # before answering anything
    reply_delay: float = 0.0  # before answering a message (a slow model), after everything else
    gate: asyncio.Event | None = None  # when set, the stream waits for it before its second line
    statuses: list[int] = field(default_factory=list)
    record_status: int = 200
    budget: dict[str, Any] = field(
        default_factory=lambda: {"allow": True, "reason": "", "minutes_left": 42.5}
    )
    businesses: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    records: dict[str, Any] = field(default_factory=dict)
    accepted: Counter[str] = field(default_factory=Counter)  # 2xx answers per Idempotency-Key
    abandoned: int = 0  # streams the client went away from before their end
    eof_delay: float = 0.0  # between the done line and the end of the stream

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.url = ""

    def seen(self, suffix: str) -> list[Seen]:
        """The requests whose path ends with `suffix`."""
        return [request for request in self.requests if request.path.endswith(suffix)]

    async def __aenter__(self) -> FakeNodeApi:
        app = web.Application(middlewares=[self._check])
        app.router.add_get("/v1/health", self._health)
        app.router.add_get("/v1/business", self._business)
        app.router.add_post("/v1/budget/check", self._budget)
        app.router.add_post("/v1/calls/{sid}/messages", self._message)
        app.router.add_post("/v1/calls/{sid}/dtmf", self._message)
        app.router.add_post("/v1/calls/{sid}/{kind:events|cost|conversation|callbacks}", self._record)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _check(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                body,
                peer[1] if peer else 0,
            )
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.headers.get("X-Api-Key") != self.api_key:
            return web.json_response({"error": "bad key"}, status=401)
        if self.statuses:
            return web.json_response({"error": "scripted"}, status=self.statuses.pop(0))
        return await handler(request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "version": 1})

    async def _business(self, request: web.Request) -> web.Response:
        found = self.businesses.get(request.query.get("to", ""))
        return web.json_response(found) if found is not None else web.json_response({}, status=404)

    async def _budget(self, request: web.Request) -> web.Response:
        return web.json_response(self.budget)

    async def _message(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(self.reply_delay)
        if not (self.stream and NDJSON in request.headers.get("Accept", "")):
            return web.json_response({"reply": "".join(self.deltas), "action": self.action})
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        try:
            for index, delta in enumerate(self.deltas):
                if index == 1 and self.gate is not None:
                    await self.gate.wait()
                await response.write(json.dumps({"delta": delta}).encode() + b"\n")
        except asyncio.CancelledError:  # the client closed the connection (handler_cancellation)
            self.abandoned += 1
            raise
        if self.end_stream:
            await response.write(json.dumps({"done": True, "action": self.action}).encode() + b"\n")
        await asyncio.sleep(self.eof_delay)
        await response.write_eof()
        return response

    async def _record(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        if 200 <= self.record_status < 300:
            self.records.setdefault(key, await request.json())
            self.accepted[key] += 1
        return web.json_response({}, status=self.record_status)
