"""Signal levels: where speech really ends in a recording."""

from __future__ import annotations

import numpy as np


def trim_trailing_quiet(pcm16: bytes, rate: int = 8000, floor_dbfs: float = -45.0) -> bytes:
    """Cut the quiet tail (a TTS fade-out, room tone) so "end of speech" means the last audible 10 ms."""
    samples = np.frombuffer(pcm16[: len(pcm16) & ~1], "<i2").astype(np.float64)
    window = max(1, rate // 100)
    floor = (10 ** (floor_dbfs / 20) * 32768) ** 2
    end = len(samples)
    while end > window and np.mean(samples[end - window : end] ** 2) < floor:
        end -= window
    return pcm16[: end * 2]
