"""Outbound audio for one call: provider-sized chunks at real time, marks after replies, clear on barge-in.

The provider plays what we send at real time; we keep only a little queued at its end (one chunk plus a
low-water margin) so that a `clear` on barge-in discards little and the caller is not left hearing stale
audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

from voicebridge.audio.chunker import OutboundChunker
from voicebridge.server.metrics import Metrics
from voicebridge.telephony.base import Translator

# Send the next chunk when the provider has less than this left to play: enough margin to absorb
# event-loop jitter without the caller hearing a gap.
LOW_WATER_S = 0.08
# A chunk that arrives this long after the provider ran dry is a gap the caller hears.
LATE_TOLERANCE_S = 0.02


@dataclass(slots=True)
class _Audio:
    pcm16: bytes


@dataclass(slots=True)
class _Mark:
    name: str


@dataclass(slots=True)
class PlaybackProgress:
    """How much of the reply being played the caller has heard so far."""

    sent_seconds: float = 0.0
    started_at: float | None = None

    def heard_seconds(self, now: float) -> float:
        if self.started_at is None:
            return 0.0
        return max(0.0, min(self.sent_seconds, now - self.started_at))


class OutboundPacer:
    """Owns every outbound send of a call; run `run()` as one of the call's tasks."""

    def __init__(
        self,
        translator: Translator,
        send_text: Callable[[str], Awaitable[None]],
        sample_rate: int,
        metrics: Metrics,
        on_first_frame: Callable[[], None] | None = None,
        on_chunk: Callable[[bytes, float, float], None] | None = None,
    ) -> None:
        self._translator = translator
        self._send = send_text
        self._rate = sample_rate
        self._metrics = metrics
        self._chunker = OutboundChunker(sample_rate, translator.outbound_chunk_ms)
        self._queue: asyncio.Queue[_Audio | _Mark] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._play_until = 0.0
        self._mid_reply = False
        self._on_first_frame = on_first_frame
        # (pcm, plays_at, sent_at) for every chunk sent: the local call recording listens here.
        self._on_chunk = on_chunk
        self.progress = PlaybackProgress()
        self._queued_bytes = 0
        self._dequeued = asyncio.Event()
        # Bumped by clear(): a chunk picked up before a clear must not go out after it.
        self._generation = 0
        self.frames_sent = 0
        self.late_frames = 0

    @property
    def queued_seconds(self) -> float:
        """Audio accepted but not yet sent to the provider."""
        return (self._queued_bytes + self._chunker.buffered_bytes) / 2 / self._rate

    def play(self, pcm16: bytes) -> None:
        """Queue reply audio; it goes out in provider-sized chunks at real time."""
        for chunk in self._chunker.push(pcm16):
            self._enqueue(chunk)

    async def wait_below(self, seconds: float) -> None:
        """Wait until less than `seconds` of audio is queued (bounds memory for a long reply)."""
        while self.queued_seconds > seconds:
            self._dequeued.clear()
            await self._dequeued.wait()

    def end_reply(self, mark_name: str) -> None:
        """Flush the last partial chunk (zero-padded) and follow it with a mark."""
        for chunk in self._chunker.flush():
            self._enqueue(chunk)
        self._queue.put_nowait(_Mark(mark_name))

    def flush(self) -> float:
        """Queue the held partial chunk now, zero-padded, with no mark: a line that must be heard before the
        rest of its reply exists (the filler). Returns the seconds of padding added."""
        held = self._chunker.buffered_bytes
        chunks = self._chunker.flush()
        for chunk in chunks:
            self._enqueue(chunk)
        return (sum(len(chunk) for chunk in chunks) - held) / 2 / self._rate

    def _enqueue(self, chunk: bytes) -> None:
        self._queued_bytes += len(chunk)
        self._queue.put_nowait(_Audio(chunk))

    async def clear(self) -> float:
        """Drop everything not yet played, tell the provider to drop its queue; return seconds heard."""
        heard = self.progress.heard_seconds(self._loop.time())
        while not self._queue.empty():
            self._queue.get_nowait()
        self._chunker.reset()
        self._generation += 1
        self._queued_bytes = 0
        self._dequeued.set()
        self._play_until = 0.0
        self._mid_reply = False
        self.progress = PlaybackProgress()
        await self._send(self._translator.clear())
        return heard

    async def play_alone(self, pcm16: bytes, mark_name: str) -> None:
        """Play one phrase with no call around it (the busy line): run until it has gone out, then stop."""
        self.play(pcm16)
        self.end_reply(mark_name)
        runner = asyncio.create_task(self.run())
        try:
            await asyncio.sleep(len(pcm16) / 2 / self._rate + 0.3)
        finally:
            runner.cancel()
            with suppress(asyncio.CancelledError):
                await runner

    def new_reply(self) -> None:
        """Start counting playback for a new reply."""
        self.progress = PlaybackProgress()

    async def run(self) -> None:
        """Send queued chunks paced to real time until cancelled."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _Mark):
                self._mid_reply = False
                await self._send(self._translator.mark(item.name))
                continue
            self._queued_bytes -= len(item.pcm16)
            self._dequeued.set()
            await self._send_paced(item.pcm16)

    async def _send_paced(self, chunk: bytes) -> None:
        generation = self._generation
        ahead = self._play_until - self._loop.time()
        if ahead > LOW_WATER_S:
            await asyncio.sleep(ahead - LOW_WATER_S)
            if generation != self._generation:
                return
        now = self._loop.time()
        if self._play_until < now:
            if self._mid_reply and now - self._play_until > LATE_TOLERANCE_S:
                self.late_frames += 1
                self._metrics.late_frames.inc()
            self._play_until = now
        await self._send(self._translator.media(chunk))
        if self._on_chunk is not None:
            self._on_chunk(chunk, self._play_until, now)
        duration = len(chunk) / 2 / self._rate
        if self.progress.started_at is None:
            self.progress.started_at = self._play_until
            if self._on_first_frame is not None:
                self._on_first_frame()
        self.progress.sent_seconds += duration
        self._play_until += duration
        self._mid_reply = True
        self.frames_sent += 1
        self._metrics.frames_out.inc()
