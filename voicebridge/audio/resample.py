"""Sample-rate conversion on soxr: a stateful stream resampler for live audio and a one-shot helper."""

from __future__ import annotations

import numpy as np
import soxr


class StreamResampler:
    """Resamples a PCM16 mono stream chunk by chunk with no seams at chunk boundaries.

    soxr keeps filter state between calls, so a chunk may come back shorter (even empty) and the rest
    arrives with later chunks or `flush()`.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._carry = b""
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def process(self, pcm16: bytes) -> bytes:
        """Feed PCM16LE bytes; return whatever resampled audio is ready (possibly b"")."""
        data = self._carry + pcm16
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        if self._stream is None:
            return data[:usable]
        if not usable:
            return b""
        samples = np.frombuffer(data[:usable], dtype="<i2")
        return self._stream.resample_chunk(samples, last=False).astype("<i2").tobytes()

    def flush(self) -> bytes:
        """Return the audio still inside the filter; the stream is finished afterwards."""
        self._carry = b""
        if self._stream is None:
            return b""
        return self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True).astype("<i2").tobytes()


def resample_once(pcm16: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole PCM16LE mono buffer."""
    if in_rate == out_rate or not pcm16:
        return pcm16
    samples = np.frombuffer(pcm16[: len(pcm16) - len(pcm16) % 2], dtype="<i2")
    return soxr.resample(samples, in_rate, out_rate, quality="HQ").astype("<i2").tobytes()
