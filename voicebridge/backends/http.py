"""The daemon's one HTTP client for backend traffic: auth headers, timeouts, retries and a circuit breaker.

Every backend request goes through `BackendHttp` so that a dead backend is noticed once, by the breaker,
instead of by every call waiting out its own timeout. Error messages name the method, path and what went
wrong, never a header or a response body (an error body may echo part of the key back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any

import aiohttp

from voicebridge.backends.base import BackendError
from voicebridge.backends.breaker import Attempt, CircuitBreaker
from voicebridge.config.schema import BackendConfig

logger = logging.getLogger("voicebridge.backend")

PROTOCOL_VERSION = "1"
NDJSON = "application/x-ndjson"
# Statuses that say "try again later" rather than "no": worth another attempt when repeating is safe.
RETRY_STATUSES = frozenset({408, 429})
# What a dead, unreachable or hanging backend looks like (aiohttp's own timeouts are TimeoutErrors too).
TRANSIENT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
# How long a finished stream may take to reach its end so its connection can be reused; a longer wait
# would hold back the reply's last sentence from a server that never ends its stream.
DRAIN_S = 0.1


class _Transient(BackendError):
    """A connection error or timeout: the request may be repeated if it is idempotent."""


def _reason(exc: BaseException, timeout: float) -> str:
    """A short description of a transport failure; never str(exc), which can carry request details."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect ({type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "broken response"
    return type(exc).__name__


async def _release(response: aiohttp.ClientResponse) -> None:
    """Return a finished response's connection to the pool (saving the next turn a handshake), else close."""
    if not response.closed and not response.content.at_eof():
        try:
            async with asyncio.timeout(DRAIN_S):
                await response.content.read()
        except (TimeoutError, aiohttp.ClientError):
            pass
    if response.content.at_eof():
        response.release()
    else:
        response.close()


class BackendHttp:
    """One aiohttp session per daemon for backend traffic, with its breaker and retry policy."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        auth_headers: Mapping[str, str] | None = None,
        breaker: CircuitBreaker | None = None,
        attempts: int | None = None,
        retry_base: float = 0.2,
        retry_cap: float = 2.0,
        connection_limit: int = 100,
    ) -> None:
        self._base = config.url.rstrip("/")
        self._connect_timeout = config.connect_timeout
        self._request_timeout = config.request_timeout
        key = config.api_key.get_secret_value()
        if auth_headers is None:
            auth_headers = {"X-Api-Key": key} if key else {}
        self._headers = {**auth_headers, "X-Voicebridge-Version": PROTOCOL_VERSION}
        self.breaker = breaker or CircuitBreaker(config.breaker_failures, config.breaker_reset_s)
        self._attempts = attempts if attempts is not None else config.retries
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._connection_limit = connection_limit
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session (idempotent)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connection_limit),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
            )

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _request_headers(
        self, idempotency_key: str | None, accept: str = "application/json"
    ) -> dict[str, str]:
        headers = {**self._headers, "Accept": accept}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    @property
    def _live(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("BackendHttp.start() was not called")
        return self._session

    @asynccontextmanager
    async def _attempt(self, method: str, path: str, timeout: float) -> AsyncIterator[Attempt]:
        """Guard one request: translate transport failures to BackendError and tell the breaker."""
        attempt = Attempt(self.breaker)
        try:
            yield attempt
        except TRANSIENT_ERRORS as exc:
            attempt.failed()
            raise _Transient(f"backend {method} {path}: {_reason(exc, timeout)}") from None
        except aiohttp.ClientError as exc:  # e.g. a malformed URL: our problem, not the backend's health
            raise BackendError(f"backend {method} {path}: {type(exc).__name__}") from None
        finally:
            attempt.abandon()

    async def _exchange_once(
        self, method: str, path: str, body: Any, headers: dict[str, str], timeout: float
    ) -> tuple[int, Any]:
        session = self._live
        async with self._attempt(method, path, timeout) as attempt, asyncio.timeout(timeout):
            async with session.request(
                method, self._base + path, json=body, headers=headers, allow_redirects=False
            ) as response:
                attempt.status(response.status)
                raw = await response.read()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:  # an error page or a bare "OK": the status is what matters to callers
            return response.status, None

    async def request_json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: bool,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON or None). Repeated only when `idempotent`."""
        limit = timeout if timeout is not None else self._request_timeout
        headers = self._request_headers(idempotency_key)
        attempts = max(1, self._attempts) if idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                status, data = await self._exchange_once(method, path, body, headers, limit)
            except _Transient:
                if attempt == attempts:
                    raise
            else:
                if attempt == attempts or not (status in RETRY_STATUSES or status >= 500):
                    return status, data
            # Full jitter: retries from many calls must not hit a recovering backend in lockstep.
            await asyncio.sleep(
                random.uniform(0, min(self._retry_cap, self._retry_base * 2 ** (attempt - 1)))
            )
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def open_stream(
        self, path: str, body: Any, *, accept: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST once (never repeated) and hand over the 2xx response to be read as it arrives."""
        session, headers = self._live, self._request_headers(None, accept)
        async with self._attempt("POST", path, self._request_timeout) as attempt:
            # Only the wait for the answer's headers is bounded here; reads are bounded one by one.
            async with asyncio.timeout(self._request_timeout):
                response = await session.post(
                    self._base + path, json=body, headers=headers, allow_redirects=False
                )
            attempt.status(response.status)
        try:
            if not 200 <= response.status < 300:
                raise BackendError(f"backend POST {path}: HTTP {response.status}")
            yield response
        except asyncio.CancelledError:
            response.close()  # abandoned mid-way (barge-in): closing tells the backend to stop producing
            raise
        finally:
            await _release(response)

    async def read_lines(self, response: aiohttp.ClientResponse, path: str) -> AsyncIterator[str]:
        """The response body line by line; each wait for more is bounded by the request timeout."""
        while True:
            try:
                async with asyncio.timeout(self._request_timeout):
                    raw = await response.content.readline()
                line = raw.decode("utf-8")
            except TRANSIENT_ERRORS as exc:
                self.breaker.record(False)
                raise BackendError(f"backend POST {path}: {_reason(exc, self._request_timeout)}") from None
            except ValueError:  # undecodable or overlong line
                raise BackendError(f"backend POST {path}: malformed stream") from None
            if not raw:
                return
            yield line.rstrip("\r\n")

    async def read_json(self, response: aiohttp.ClientResponse, path: str) -> Any:
        """The whole response body as JSON, within the request timeout."""
        try:
            async with asyncio.timeout(self._request_timeout):
                raw = await response.read()
        except TRANSIENT_ERRORS as exc:
            self.breaker.record(False)
            raise BackendError(f"backend POST {path}: {_reason(exc, self._request_timeout)}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise BackendError(f"backend POST {path}: answer is not JSON") from None

    async def stream_ndjson(self, path: str, body: Any) -> AsyncIterator[dict[str, Any]]:
        """POST and yield the answer's NDJSON objects as they arrive (one object if it answers plain JSON)."""
        async with self.open_stream(path, body, accept=f"{NDJSON}, application/json") as response:
            if response.content_type != NDJSON:
                document = await self.read_json(response, path)
                if not isinstance(document, dict):
                    raise BackendError(f"backend POST {path}: answer is not a JSON object")
                yield document
                return
            async with aclosing(self.read_lines(response, path)) as lines:
                async for line in lines:
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        raise BackendError(f"backend POST {path}: stream line is not JSON") from None
                    if not isinstance(item, dict):
                        raise BackendError(f"backend POST {path}: stream line is not a JSON object")
                    yield item


class HttpBackend:
    """What the node and openai backends share: their config and one `BackendHttp`, opened and closed
    with the backend."""

    def __init__(self, config: BackendConfig, http: BackendHttp) -> None:
        self._config = config
        self._http = http

    async def start(self) -> None:
        """Open the HTTP client."""
        await self._http.start()

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._http.close()
