"""Provider-sized outbound chunks: whole 20 ms frames, at least 200 ms, the tail zero-padded on flush.

Exotel plays a payload that is not a multiple of 320 bytes (20 ms at 8 kHz) only after waiting 20 ms, and
wants at least 3200 bytes; we scale both to the stream's rate so 16 and 24 kHz streams keep the same timing.
A μ-law stream (one byte a sample) asks for 400 ms chunks to reach the same 3200 bytes (the translator's
`outbound_chunk_ms`).
"""

from __future__ import annotations

FRAME_MS = 20
DEFAULT_CHUNK_MS = 200


class OutboundChunker:
    """Accumulates PCM16 and cuts it into equal, frame-aligned chunks of `chunk_ms`."""

    def __init__(self, sample_rate: int, chunk_ms: int = DEFAULT_CHUNK_MS) -> None:
        if sample_rate % 50:
            raise ValueError(f"sample rate {sample_rate} has no whole 20 ms frame")
        if chunk_ms < DEFAULT_CHUNK_MS or chunk_ms % FRAME_MS:
            raise ValueError(f"chunk_ms must be a multiple of {FRAME_MS} and >= {DEFAULT_CHUNK_MS}")
        self.frame_bytes = sample_rate * FRAME_MS // 1000 * 2
        self.chunk_bytes = self.frame_bytes * (chunk_ms // FRAME_MS)
        self._buffer = bytearray()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held back waiting for a full chunk."""
        return len(self._buffer)

    def push(self, pcm16: bytes) -> list[bytes]:
        """Add audio; return every full chunk now available."""
        self._buffer += pcm16
        chunks: list[bytes] = []
        while len(self._buffer) >= self.chunk_bytes:
            chunks.append(bytes(self._buffer[: self.chunk_bytes]))
            del self._buffer[: self.chunk_bytes]
        return chunks

    def flush(self) -> list[bytes]:
        """Return what is left as one chunk, zero-padded to a whole chunk (never shorter than the minimum)."""
        if not self._buffer:
            return []
        tail = bytes(self._buffer) + bytes(self.chunk_bytes - len(self._buffer))
        self._buffer.clear()
        return [tail]

    def reset(self) -> None:
        """Drop buffered audio (barge-in)."""
        self._buffer.clear()
