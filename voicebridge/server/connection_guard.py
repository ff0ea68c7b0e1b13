"""Connections that hold the daemon without using it: too many from one address or in all, a request
head that trickles in. Each is cut, counted in `voicebridge_connections_refused_total{reason}` and
logged on one line.

aiohttp (3.14 as installed) does cut a trickled head itself: its keep-alive timer, started when the
connection opens and again after each response, closes a connection still waiting for a complete head
when it fires. What this guard adds: the cut counted and logged (aiohttp's is silent), its own explicit
`limits.request_head_timeout_s` for the first head (aiohttp's keep-alive is set a second later, see
`serve`, so the guard's counted cut comes first; later heads are left to keep-alive), per-address and
global connection caps checked before aiohttp sees a byte, and the same bound on aiohttp versions whose
keep-alive timer starts only once a handler waits idle. The listening socket hands every connection to
`GuardedConnection`, a transparent asyncio protocol in front of aiohttp's own. Bodies: body_deadline.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from voicebridge.config.schema import Settings
from voicebridge.server.metrics import Metrics

logger = logging.getLogger("voicebridge.connections")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConnectionLimits:
    """The connection counts of one listening socket: per client address, and in all.

    Exempt from the per-address cap: addresses in server.trusted_proxies, and loopback peers unless
    limits.cap_loopback_per_address is set. A loopback peer is the host itself: a TLS proxy on the same
    host (through which every call, webhook and scrape arrives) or a local tool; capping it as one client
    would refuse real calls at accept. The global ceiling counts every connection, exempt or not, so that
    many addresses together cannot exhaust the process's file descriptors.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        limits = settings.limits
        calls = settings.server.max_concurrent_calls
        self.per_address = limits.max_connections_per_address or 2 * calls + 16
        self.total = limits.max_connections or 4 * calls + 256
        self.head_timeout_s = limits.request_head_timeout_s
        self.metrics = metrics
        self._cap_loopback = limits.cap_loopback_per_address
        # Everything behind a proxy arrives from the proxy's address: the cap is the proxy's job there.
        self._exempt: list[Network] = [
            ipaddress.ip_network(c, strict=False) for c in settings.server.trusted_proxies
        ]
        self._open: dict[str, int] = {}
        self._open_total = 0
        self._refusing: set[str] = set()

    @property
    def open_connections(self) -> int:
        """Connections admitted and not yet closed."""
        return self._open_total

    def admit(self, peer: str) -> bool:
        """Count a new connection from `peer`, or refuse it (counted; logged once per episode)."""
        address, exempt = self._classify(peer)
        if self._open_total >= self.total:
            return self._refuse("global", "*", "%d open in all (limits.max_connections)", self._open_total)
        count = self._open.get(address, 0)
        if not exempt and count >= self.per_address:
            return self._refuse(
                "per_address", address, "%d open from it (limits.max_connections_per_address)", count
            )
        self._open_total += 1
        if not exempt:
            self._open[address] = count + 1
        return True

    def release(self, peer: str) -> None:
        """A connection `admit` let in has closed."""
        address, exempt = self._classify(peer)
        self._open_total = max(0, self._open_total - 1)
        if self._open_total < self.total:
            self._refusing.discard("*")
        if exempt:
            return
        count = self._open.get(address, 0) - 1
        if count <= 0:
            self._open.pop(address, None)
        else:
            self._open[address] = count
        if count < self.per_address:
            self._refusing.discard(address)

    def _refuse(self, reason: str, address: str, why: str, count: int) -> bool:
        self.metrics.connections_refused.labels(reason=reason).inc()
        if address not in self._refusing:  # one line per episode, not one per connection
            self._refusing.add(address)
            logger.warning("refusing connections from %s: " + why, address, count)
        return False

    def _classify(self, peer: str) -> tuple[str, bool]:
        """The peer's address as counted (an IPv4-mapped IPv6 address as its IPv4 one), and whether the
        per-address cap leaves it alone."""
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return peer, False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        exempt = (ip.is_loopback and not self._cap_loopback) or any(ip in network for network in self._exempt)
        return str(ip), exempt


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
