"""Connections that hold the daemon without using it: too many from one address, a request head that
trickles in, a body that never finishes. Each is cut, counted in
`voicebridge_connections_refused_total{reason}` and logged on one line.

aiohttp has no timeout for reading a request head (its keep-alive timer starts only once a handler waits
idle), and none for a body. So the listening socket hands every connection to `GuardedConnection`, a
transparent asyncio protocol in front of aiohttp's own, which counts connections per address and gives
the first request head `limits.request_head_timeout_s` to arrive; later heads are bounded by aiohttp's
keep-alive timeout, which `serve` sets from the same limit. `body_deadline` waits for a body to arrive,
under a deadline, before any handler (or the access checks) runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from voicebridge.config import Settings
from voicebridge.daemon.metrics import Metrics

logger = logging.getLogger("voicebridge.connections")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConnectionLimits:
    """The per-address connection count for one listening socket, and what to do when it is exceeded."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        limits = settings.limits
        self.per_address = limits.max_connections_per_address or 2 * settings.server.max_concurrent_calls + 16
        self.head_timeout_s = limits.request_head_timeout_s
        self.metrics = metrics
        # Everything behind a proxy arrives from the proxy's address: the cap is the proxy's job there.
        self._exempt: list[Network] = [
            ipaddress.ip_network(c, strict=False) for c in settings.server.trusted_proxies
        ]
        self._open: dict[str, int] = {}
        self._refusing: set[str] = set()

    def admit(self, address: str) -> bool:
        if self._is_exempt(address):
            return True
        count = self._open.get(address, 0)
        if count >= self.per_address:
            self.metrics.connections_refused.labels(reason="per_address").inc()
            if address not in self._refusing:  # one line per episode, not one per connection
                self._refusing.add(address)
                logger.warning(
                    "refusing connections from %s: %d open (limits.max_connections_per_address)",
                    address,
                    count,
                )
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        if self._is_exempt(address):
            return
        count = self._open.get(address, 0) - 1
        if count <= 0:
            self._open.pop(address, None)
        else:
            self._open[address] = count
        if count < self.per_address:
            self._refusing.discard(address)

    def _is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)


class GuardedConnection(asyncio.Protocol):
    """aiohttp's RequestHandler behind a counting, head-timing front; everything else passes through."""

    def __init__(self, make_handler: Callable[[], RequestHandler], limits: ConnectionLimits) -> None:
        self._make_handler = make_handler
        self._limits = limits
        self._handler: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._address = ""
        self._head_timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._limits.admit(self._address):
            transport.abort()
            return
        self._transport = transport
        self._head_timer = asyncio.get_running_loop().call_later(
            self._limits.head_timeout_s, self._head_overdue
        )
        self._handler = self._make_handler()
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._handler is None:
            return
        if self._head_timer is not None:
            # A head ends at an empty line; keep three bytes so one split across reads is still seen.
            seen = self._tail + data
            if b"\n\r\n" in seen or b"\n\n" in seen:
                self._head_timer.cancel()
                self._head_timer = None
            self._tail = seen[-3:]
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._handler is not None:
            self._limits.release(self._address)
            self._handler.connection_lost(exc)
            self._handler = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        self._limits.metrics.connections_refused.labels(reason="slow_request_head").inc()
        logger.warning(
            "cut a connection from %s: no complete request head in %.0fs",
            self._address,
            self._limits.head_timeout_s,
        )
        if self._transport is not None:
            self._transport.abort()


class GuardedTCPSite(web.BaseSite):
    """A TCP site whose connections go through `GuardedConnection`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: ConnectionLimits) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limits = limits

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        limits = self._limits
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GuardedConnection(server, limits), self._host, self._port, backlog=self._backlog
        )
