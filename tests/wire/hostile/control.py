"""The daemon's control socket from a hostile local client: raw lines in, every reply line out."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPLY_TIMEOUT_S = 15.0


@dataclass
class ControlExchange:
    """What one connection got back: parsed reply objects, lines that were not JSON objects, how it ended."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    unparsable: list[bytes] = field(default_factory=list)
    ending: str = "eof"  # "eof" (the daemon closed after we did), "timeout", "reset"


async def exchange(socket_path: Path, payload: bytes) -> ControlExchange:
    """Send `payload` (one or more lines), half-close, and read replies until the daemon closes."""
    result = ControlExchange()
    reader, writer = await asyncio.open_unix_connection(str(socket_path), limit=8 << 20)
    try:
        try:
            writer.write(payload)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            pass  # the daemon closed after an over-long line; its reply may still be readable
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                while line := await reader.readline():
                    try:
                        reply = json.loads(line)
                    except ValueError:
                        reply = None
                    if isinstance(reply, dict):
                        result.replies.append(reply)
                    else:
                        result.unparsable.append(line[:80])
        except TimeoutError:
            result.ending = "timeout"
        except ConnectionError:
            result.ending = "reset"
    finally:
        writer.transport.abort()
    return result


def is_reply(reply: dict[str, Any]) -> bool:
    """A well-formed control reply: version 1, ok true with a result, or ok false with code and error."""
    if reply.get("version") != 1 or not isinstance(reply.get("ok"), bool):
        return False
    return "result" in reply if reply["ok"] else isinstance(reply.get("code"), str)
