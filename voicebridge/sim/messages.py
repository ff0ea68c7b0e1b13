"""What a simulated provider (the caller side) sees when it parses one message from the daemon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutboundKind = Literal["media", "mark", "clear", "other"]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A daemon → provider message decoded by the caller side; `raw_payload_bytes` is the wire size."""

    kind: OutboundKind
    pcm16: bytes = b""
    mark_name: str = ""
    raw_payload_bytes: int = 0
    stream_sid: str = ""
