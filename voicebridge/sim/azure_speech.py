"""A local fake of Azure Speech's synthesis websocket (the USP protocol the real SDK speaks).

The SDK connects to `/cognitiveservices/websocket/v1` with the `USP` subprotocol and sends text messages
of header lines, a blank line and a body: `speech.config`, `synthesis.context` (with the output format) and
`ssml`. The service answers text `turn.start`, binary `audio` messages (2-byte big-endian header length,
headers, then audio) and text `turn.end`; the SDK then reports `telemetry`. We answer with a sine tone
at the requested rate, or with pre-rendered speech (`reply_pcm`), as bench/ does. The SDK stops a
synthesis (and ends a synthesizer) by closing the websocket.

Standalone, for benchmarks: `python -m voicebridge.sim.azure_speech --port P --reply-wav reply.wav`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import socket
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
from aiohttp import WSMsgType, web

FORMAT_RATES = {
    "raw-8khz-16bit-mono-pcm": 8000,
    "raw-16khz-16bit-mono-pcm": 16000,
    "raw-24khz-16bit-mono-pcm": 24000,
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _parse(text: str) -> tuple[dict[str, str], str]:
    head, _, body = text.partition("\r\n\r\n")
    headers = {}
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def _text_message(path: str, request_id: str, body: str) -> str:
    return (
        f"X-RequestId:{request_id}\r\nPath:{path}\r\nContent-Type:application/json; charset=utf-8\r\n"
        f"X-Timestamp:2026-01-01T00:00:00.000Z\r\n\r\n{body}"
    )


def _audio_message(request_id: str, pcm: bytes) -> bytes:
    header = f"X-RequestId:{request_id}\r\nPath:audio\r\nContent-Type:audio/x-wav\r\n".encode()
    return len(header).to_bytes(2, "big") + header + pcm


@dataclass
class FakeAzureSpeech:
    """Async context manager serving the fake on a free loopback port; records what the SDK sent."""

    pieces: int = 3
    piece_seconds: float = 0.3
    piece_delay: float = 0.0
    tone_hz: float = 440.0
    split_odd: bool = False
    fail_with_close: bool = False
    fail_message: str = "fake service failure"
    # Pre-rendered speech (PCM16 mono at reply_rate) sent for every request instead of the tone, in
    # piece_seconds pieces; first_audio_delay stands in for the service's time to first byte.
    reply_pcm: bytes = b""
    reply_rate: int = 8000
    first_audio_delay: float = 0.0
    port_wanted: int = 0
    ssml_received: list[str] = field(default_factory=list)
    # The voice name and the `xml:lang` each SSML request asked for, in order.
    voices_received: list[str] = field(default_factory=list)
    languages_received: list[str] = field(default_factory=list)
    formats_received: list[str] = field(default_factory=list)
    keys_received: list[str] = field(default_factory=list)
    paths_received: list[str] = field(default_factory=list)
    connections: int = 0
    pieces_sent: int = 0
    stopped_early: int = 0

    def __post_init__(self) -> None:
        self.port = self.port_wanted or _free_port()
        self.host_url = f"ws://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._resampled: dict[int, bytes] = {}

    async def __aenter__(self) -> FakeAzureSpeech:
        app = web.Application()
        app.router.add_get("/cognitiveservices/websocket/v1", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._runner is not None
        # The SDK keeps its socket open while a synthesizer lives; close them or cleanup waits a minute.
        for ws in list(self._sockets):
            await ws.close()
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        self.keys_received.append(request.headers.get("Ocp-Apim-Subscription-Key", ""))
        ws = web.WebSocketResponse(protocols=("USP",))
        await ws.prepare(request)
        self._sockets.add(ws)
        output_format = "raw-8khz-16bit-mono-pcm"
        turn: asyncio.Task[None] | None = None
        # Audio goes out from a task so this loop keeps reading: the SDK stops a synthesis by closing the
        # socket, and an unanswered close frame would stall it (~1 s) as it would never happen in Azure.
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            headers, body = _parse(message.data)
            path = headers.get("path", "")
            self.paths_received.append(path)
            if path == "synthesis.context":
                output_format = json.loads(body)["synthesis"]["audio"]["outputFormat"]
            elif path == "ssml":
                self.ssml_received.append(body)
                self.voices_received.append(_attribute(body, "voice", "name"))
                self.languages_received.append(_attribute(body, "speak", "xml:lang"))
                self.formats_received.append(output_format)
                if self.fail_with_close:
                    await ws.close(code=1011, message=self.fail_message.encode())
                    break
                request_id = headers.get("x-requestid", "")
                turn = asyncio.create_task(self._synthesise(ws, request_id, output_format))
        if turn is not None and not turn.done():
            self.stopped_early += 1
            turn.cancel()
        self._sockets.discard(ws)
        return ws

    async def _synthesise(self, ws: web.WebSocketResponse, request_id: str, output_format: str) -> None:
        rate = FORMAT_RATES.get(output_format, 8000)
        samples = int(rate * self.piece_seconds)
        try:
            await ws.send_str(_text_message("turn.start", request_id, '{"context":{"serviceTag":"fake"}}'))
            if self.first_audio_delay:
                await asyncio.sleep(self.first_audio_delay)
            if self.reply_pcm:
                await self._send_reply(ws, request_id, rate)
                return
            for index in range(self.pieces):
                t = np.arange(index * samples, (index + 1) * samples) / rate
                tone = (np.sin(2 * math.pi * self.tone_hz * t) * 8000).astype("<i2").tobytes()
                # A network service owes us no sample alignment: optionally split a sample across messages.
                cuts = [0, len(tone) // 2 | 1, len(tone)] if self.split_odd else [0, len(tone)]
                for begin, end in itertools.pairwise(cuts):
                    await ws.send_bytes(_audio_message(request_id, tone[begin:end]))
                self.pieces_sent += 1
                if self.piece_delay:
                    await asyncio.sleep(self.piece_delay)
            await ws.send_str(_text_message("turn.end", request_id, "{}"))
        except ConnectionError:  # the client went away mid-turn (a stopped synthesis)
            pass

    async def _send_reply(self, ws: web.WebSocketResponse, request_id: str, rate: int) -> None:
        pcm = self._reply_at(rate)
        piece = int(rate * self.piece_seconds) * 2
        for offset in range(0, len(pcm), piece):
            await ws.send_bytes(_audio_message(request_id, pcm[offset : offset + piece]))
            self.pieces_sent += 1
            if self.piece_delay:
                await asyncio.sleep(self.piece_delay)
        await ws.send_str(_text_message("turn.end", request_id, "{}"))

    def _reply_at(self, rate: int) -> bytes:
        if rate not in self._resampled:
            from voicebridge.audio.resample import resample_once

            self._resampled[rate] = resample_once(self.reply_pcm, self.reply_rate, rate)
        return self._resampled[rate]


def _attribute(ssml: str, element: str, name: str) -> str:
    """One attribute of the first `element` in an SSML document, "" when absent."""
    found = re.search(rf"<{element}\b[^>]*\s{re.escape(name)}=(\"[^\"]*\"|'[^']*')", ssml)
    return found.group(1)[1:-1] if found else ""


def ssml_text(ssml: str) -> str:
    """The text content of an SSML document (tags stripped, entities left as sent)."""
    return re.sub(r"<[^>]+>", "", ssml)


async def _serve_forever(fake: FakeAzureSpeech) -> None:
    async with fake:
        print(f"fake Azure Speech on {fake.host_url}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    """Serve the fake until killed, answering every request with the speech in --reply-wav."""
    import argparse
    import wave

    parser = argparse.ArgumentParser(description="A local fake of Azure Speech synthesis (USP websocket).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply-wav", required=True, help="PCM16 mono WAV sent for every request")
    parser.add_argument("--first-audio-ms", type=float, default=0.0, help="delay before the first audio")
    parser.add_argument("--piece-ms", type=float, default=100.0, help="audio per websocket message")
    args = parser.parse_args()
    with wave.open(args.reply_wav, "rb") as wav:
        pcm, rate = wav.readframes(wav.getnframes()), wav.getframerate()
    fake = FakeAzureSpeech(
        reply_pcm=pcm,
        reply_rate=rate,
        first_audio_delay=args.first_audio_ms / 1000,
        piece_seconds=args.piece_ms / 1000,
        port_wanted=args.port,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(fake))


if __name__ == "__main__":
    main()
