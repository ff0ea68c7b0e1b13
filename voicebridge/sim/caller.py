"""A simulated caller that speaks Exotel's (or Twilio's) media-stream protocol to a voicebridge daemon.

It behaves as the provider would: paces caller audio in real time, plays the bot's audio on a playout
clock, echoes marks when the audio before them has finished playing, and drops queued audio on `clear`.
The tests, `voicebridge simulate` and the benchmarks all use this one caller.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from voicebridge.sim.messages import OutboundMessage
from voicebridge.sim.providers import SIM_PROVIDERS, ProviderCaller

# A name in sim.providers.SIM_PROVIDERS.
Provider = Literal["exotel", "twilio"]


@dataclass(slots=True)
class ReceivedFrame:
    """One outbound media frame as the caller received it."""

    at: float
    pcm16: bytes
    wire_bytes: int
    plays_at: float = 0.0


@dataclass(slots=True)
class CallerLog:
    """Everything the daemon sent to this caller, in order, with arrival times (monotonic)."""

    frames: list[ReceivedFrame] = field(default_factory=list)
    sent: list[tuple[float, bytes]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)

    def audio_between(self, start: float, end: float = float("inf")) -> bytes:
        """Bot audio received in [start, end)."""
        return b"".join(frame.pcm16 for frame in self.frames if start <= frame.at < end)

    def first_frame_after(self, moment: float) -> float | None:
        return next((frame.at for frame in self.frames if frame.at >= moment), None)


@dataclass(slots=True)
class TurnResult:
    """What happened in one caller turn."""

    speech_end_at: float
    first_reply_frame_at: float | None
    mark_at: float | None
    reply_pcm16: bytes
    barged_in: bool = False

    @property
    def latency(self) -> float | None:
        """Voice-to-voice: caller's last speech sample on the wire → first reply frame received."""
        if self.first_reply_frame_at is None:
            return None
        return self.first_reply_frame_at - self.speech_end_at


class SimulatedCaller:
    """One simulated phone call over a real WebSocket."""

    def __init__(
        self,
        ws_url: str,
        provider: Provider = "exotel",
        sample_rate: int = 8000,
        call_sid: str | None = None,
        from_number: str = "+919876543210",
        to_number: str = "+918047491899",
        chunk_ms: int = 100,
        realtime: bool = True,
    ) -> None:
        self.call_sid = call_sid or f"CA{uuid.uuid4().hex[:24]}"
        self.provider = provider
        stream_sid = f"MZ{uuid.uuid4().hex[:24]}"
        make_caller = SIM_PROVIDERS[provider].caller
        self.wire: ProviderCaller = make_caller(
            self.call_sid, stream_sid, from_number, to_number, sample_rate
        )
        # The provider's side decides the rate: Twilio's is always 8 kHz, whatever was asked.
        self.sample_rate = self.wire.sample_rate
        self._url = ws_url
        self._chunk_bytes = self.sample_rate * chunk_ms // 1000 * 2
        self._chunk_s = chunk_ms / 1000
        self._realtime = realtime
        self.log = CallerLog()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._play_until = 0.0
        self._pending_echoes: set[asyncio.TimerHandle] = set()
        self._mark_seen = asyncio.Event()
        self._echo_tasks: set[asyncio.Future[None]] = set()
        self._silence_task: asyncio.Task[float] | None = None
        self.started_at = 0.0

    async def __aenter__(self) -> SimulatedCaller:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.hangup()

    async def connect(self) -> None:
        """Open the socket and send `connected` and `start`, as the provider does."""
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self._url, autoping=True, max_msg_size=4 << 20)
        self._reader = asyncio.create_task(self._read())
        await self.send_text(self.wire.connected())
        self.started_at = time.monotonic()
        await self.send_text(self.wire.start())

    async def send_text(self, text: str) -> None:
        """Send a raw text frame (tests use it for malformed input)."""
        assert self._ws is not None
        if not self._ws.closed:
            await self._ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(data)

    async def stream(self, pcm16: bytes) -> float:
        """Send audio in provider-sized chunks, paced in real time; return when the last chunk went out."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent_at = started
        for index, offset in enumerate(range(0, len(pcm16), self._chunk_bytes)):
            if self.closed.is_set():
                break
            if self._realtime:
                # A phone sends each chunk once it has been spoken: at the chunk's end time.
                due = started + (index + 1) * self._chunk_s
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
            chunk = pcm16[offset : offset + self._chunk_bytes]
            await self.send_text(self.wire.media(chunk))
            sent_at = time.monotonic()
            self.log.sent.append((sent_at, chunk))
        return sent_at

    async def say(self, speech: bytes, trailing_silence_s: float = 1.5) -> float:
        """Speak a turn (then silence, as a line carries); return when the last speech sample was sent."""
        await self.end_trailing_silence()
        # A phone sends whole chunks: the one the speech ends in carries the start of the silence after it.
        speech_end = await self.stream(speech + bytes(-len(speech) % self._chunk_bytes))
        silence = bytes(int(self.sample_rate * trailing_silence_s) * 2)
        self._mark_seen.clear()
        self._silence_task = asyncio.create_task(self.stream(silence))
        return speech_end

    async def end_trailing_silence(self) -> None:
        """Stop the silence `say` left running, so the next turn can start at once (a barge-in)."""
        if self._silence_task is not None:
            self._silence_task.cancel()
            with suppress(asyncio.CancelledError, ConnectionResetError, RuntimeError):
                await self._silence_task
            self._silence_task = None

    async def keep_silent(self, seconds: float) -> None:
        """Send line silence for a while (a real line never stops sending)."""
        await self.stream(bytes(int(self.sample_rate * seconds) * 2))

    async def listen_until_mark(self, timeout: float = 20.0) -> float | None:
        """Keep the line open with silence until the daemon's next mark has been played; return its time."""
        since = time.monotonic()
        silence = asyncio.create_task(self.keep_silent(timeout))
        try:
            return await self.wait_for_mark(since, timeout)
        finally:
            silence.cancel()
            with suppress(asyncio.CancelledError, ConnectionResetError, RuntimeError):
                await silence

    async def wait_for_mark(self, after: float, timeout: float = 20.0) -> float | None:
        """Wait for a mark from the daemon that arrives after `after` (monotonic); None on timeout/close."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closed.is_set():
            for at, _name in self.log.marks:
                if at >= after:
                    return at
            self._mark_seen.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._mark_seen.wait()
        return next((at for at, _ in self.log.marks if at >= after), None)

    async def turn(self, speech: bytes, timeout: float = 20.0, silence_s: float = 1.5) -> TurnResult:
        """Say one turn and wait for the reply's mark; keeps the line alive with silence meanwhile."""
        # The silence runs on while we wait (until the next turn or hangup): a real line never stops
        # sending, and the daemon ends a stream that goes quiet (limits.inbound_idle_s).
        speech_end = await self.say(speech, trailing_silence_s=silence_s + timeout)
        mark_at = await self.wait_for_mark(speech_end, timeout)
        first = self.log.first_frame_after(speech_end)
        reply = self.log.audio_between(speech_end, (mark_at or time.monotonic()) + 0.001)
        return TurnResult(speech_end, first, mark_at, reply)

    async def dtmf(self, digit: str) -> None:
        await self.send_text(self.wire.dtmf(digit))

    async def stop(self, reason: str = "callended") -> None:
        """Send `stop` as the provider does when the caller hangs up, then close."""
        await self.send_text(self.wire.stop(reason))
        await self.hangup()

    async def hangup(self) -> None:
        """Close the socket and release everything."""
        for handle in self._pending_echoes:
            handle.cancel()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            with suppress(asyncio.CancelledError):
                await self._reader
        await self.end_trailing_silence()
        if self._session is not None:
            await self._session.close()
        self.closed.set()

    async def _read(self) -> None:
        assert self._ws is not None
        loop = asyncio.get_running_loop()
        try:
            async for message in self._ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    self.log.events.append((time.monotonic(), f"non-text frame {message.type}"))
                    continue
                self._on_outbound(self.wire.parse_outbound(message.data), loop)
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()

    def _on_outbound(self, message: OutboundMessage, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        self.log.events.append((now, message.kind))
        if message.kind == "media":
            plays_at = max(self._play_until, now)
            self.log.frames.append(ReceivedFrame(now, message.pcm16, message.raw_payload_bytes, plays_at))
            self._play_until = plays_at + len(message.pcm16) / 2 / self.sample_rate
        elif message.kind == "mark":
            # The provider echoes a mark once everything queued before it has played.
            delay = max(0.0, self._play_until - now)
            handle = loop.call_later(delay, self._echo_mark, message.mark_name)
            self._pending_echoes.add(handle)
        elif message.kind == "clear":
            self.log.clears.append(now)
            self._play_until = now
            for handle in self._pending_echoes:
                handle.cancel()
            self._pending_echoes.clear()

    def _echo_mark(self, name: str) -> None:
        self.log.marks.append((time.monotonic(), name))
        self._mark_seen.set()
        if self._ws is not None and not self._ws.closed:
            echo = asyncio.ensure_future(self.send_text(self.wire.mark(name)))
            self._echo_tasks.add(echo)
            echo.add_done_callback(self._echo_tasks.discard)
