"""A minimal WebSocket client on a raw socket (RFC 6455), for tests that must control every byte and every
read: a client that never reads, that answers no pings, or that trickles its upgrade request."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from dataclasses import dataclass

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True, slots=True)
class Frame:
    opcode: int
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")


class RawWebSocket:
    """One client connection; `recv()` is only called when a test wants to read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str, rcvbuf: int | None = None) -> RawWebSocket:
        """Open and upgrade; `rcvbuf` shrinks the client's receive buffer (a provider that stops reading)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        if rcvbuf is not None:
            import socket

            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace").splitlines()[0])
        return cls(reader, writer)

    def send_text(self, text: str) -> None:
        """Queue one masked text frame (no drain: a test may be deliberately stalling)."""
        self.writer.write(encode_frame(OP_TEXT, text.encode()))

    async def send_text_drained(self, text: str) -> None:
        self.send_text(text)
        await self.writer.drain()

    async def recv(self) -> Frame:
        """The next frame; IncompleteReadError when the server closed the connection."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return Frame(first & 0x0F, await self.reader.readexactly(length))

    async def recv_until_closed(self) -> list[Frame]:
        """Every frame until the server closes (a close frame or end of stream)."""
        frames: list[Frame] = []
        try:
            while True:
                frame = await self.recv()
                frames.append(frame)
                if frame.opcode == OP_CLOSE:
                    return frames
        except (asyncio.IncompleteReadError, ConnectionError):
            return frames

    def close(self) -> None:
        self.writer.transport.abort()


def encode_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked
