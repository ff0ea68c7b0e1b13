"""Local call recording: both sides on one timeline, written as a stereo WAV (caller left, bot right).

Off by default (`calls.record_locally`). Audio is kept in memory until the call ends (about 1.9 MB per
minute at 8 kHz) and written by a worker thread, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np

from voicebridge.audio.wav import interleave_stereo, write_wav

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class StereoCallRecording:
    """Collects caller and bot audio with their times (loop clock) and renders them as heard."""

    def __init__(self, sample_rate: int, started_at: float) -> None:
        self._rate = sample_rate
        self._start = started_at
        self._caller: list[tuple[float, bytes]] = []
        self._bot: list[tuple[float, bytes, float]] = []
        self._clears: list[float] = []

    def caller(self, pcm16: bytes, received_at: float) -> None:
        """Caller audio that arrived at `received_at` (it was spoken just before)."""
        self._caller.append((received_at - len(pcm16) / 2 / self._rate, pcm16))

    def bot(self, pcm16: bytes, plays_at: float, sent_at: float) -> None:
        """Bot audio sent at `sent_at` that the provider plays from `plays_at`."""
        self._bot.append((plays_at, pcm16, sent_at))

    def cleared(self, at: float) -> None:
        """A barge-in: bot audio not played by `at` was never heard."""
        self._clears.append(at)

    def render(self) -> tuple[bytes, bytes]:
        """(caller, bot) PCM16 tracks of equal length."""
        pieces = [(at, pcm) for at, pcm in self._caller] + [(at, pcm) for at, pcm, _ in self._bot]
        ends = [at + len(pcm) / 2 / self._rate for at, pcm in pieces] + [self._start]
        total = int((max(ends) - self._start) * self._rate) + 1
        caller, bot = np.zeros(total, dtype="<i2"), np.zeros(total, dtype="<i2")
        for at, pcm in self._caller:
            self._place(caller, at, np.frombuffer(pcm, "<i2"))
        for at, pcm, sent_at in self._bot:
            samples = np.frombuffer(pcm, "<i2")
            end = at + len(samples) / self._rate
            # A clear after this was sent and before it finished playing cut it off there.
            stop = min((c for c in self._clears if sent_at <= c < end), default=end)
            self._place(bot, at, samples[: max(0, int((stop - at) * self._rate))])
        return caller.tobytes(), bot.tobytes()

    def _place(self, track: np.ndarray, at: float, samples: np.ndarray) -> None:
        start = max(0, int((at - self._start) * self._rate))
        piece = samples[: len(track) - start]
        track[start : start + len(piece)] = piece

    async def save(self, directory: Path, call_sid: str) -> Path:
        """Write `<directory>/<call_sid>.wav` off the event loop; return its path."""
        path = directory / f"{_SAFE_NAME.sub('_', call_sid)}.wav"

        def write() -> None:
            directory.mkdir(parents=True, exist_ok=True)
            caller, bot = self.render()
            write_wav(path, interleave_stereo(caller, bot), self._rate, channels=2)

        await asyncio.to_thread(write)
        return path
