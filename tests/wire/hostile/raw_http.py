"""HTTP/1.1 over a bare socket: requests a client library refuses to send (non-UTF-8 header bytes, NUL in
the target, lying framing), and the status line of whatever comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

Header = tuple[bytes | str, bytes | str]
READ_TIMEOUT_S = 15.0


def _bytes(value: bytes | str) -> bytes:
    # Text is sent as UTF-8; bytes as they are, so a test can put any byte on the wire.
    return value if isinstance(value, bytes) else value.encode()


def build_request(
    method: bytes | str,
    target: bytes | str,
    headers: Sequence[Header] = (),
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> bytes:
    """One request as raw bytes; adds Host and Connection: close, and Content-Length for a body."""
    lines = [_bytes(method) + b" " + _bytes(target) + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [_bytes(name) + b": " + _bytes(value) for name, value in headers]
    if body and content_length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class RawResponse:
    """What came back: the status (None if the connection closed without a status line)."""

    status: int | None
    head: bytes
    body: bytes
    note: str = ""  # why there is no status: "closed", "timeout", "reset"


async def send_raw(port: int, request: bytes, timeout: float = READ_TIMEOUT_S) -> RawResponse:
    """Write `request` to 127.0.0.1:`port` and read one response (only its head for a 101 upgrade)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            writer.write(request)
            await writer.drain()
        except ConnectionError:
            pass  # the server answered early (413, 400) and closed; its answer may still be readable
        try:
            async with asyncio.timeout(timeout):
                head = await reader.readuntil(b"\r\n\r\n")
                status = _status(head)
                if status == 101:
                    return RawResponse(status, head, b"")
                body = await reader.read(1 << 20)
        except TimeoutError:
            return RawResponse(None, b"", b"", "timeout")
        except asyncio.IncompleteReadError as partial:
            return RawResponse(_status(partial.partial), partial.partial, b"", "closed")
        except (ConnectionError, asyncio.LimitOverrunError):
            return RawResponse(None, b"", b"", "reset")
        return RawResponse(status, head, body)
    finally:
        writer.transport.abort()


def _status(head: bytes) -> int | None:
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


async def trickle_headers(port: int, seconds: float, interval: float = 0.5) -> bool:
    """Send a request's headers a line at a time for `seconds`; True if the server cut us off meanwhile."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        writer.write(b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        index = 0
        while loop.time() < deadline:
            await asyncio.sleep(interval)
            if reader.at_eof():
                return True
            index += 1
            try:
                writer.write(f"X-Slow-{index}: {'a' * 8}\r\n".encode())
                await writer.drain()
            except ConnectionError:
                return True
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(0.05):
                if not await reader.read(1):
                    return True
        return False
    finally:
        writer.transport.abort()
