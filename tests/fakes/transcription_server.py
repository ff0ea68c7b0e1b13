"""Local fakes of the two remote STT servers, each speaking its documented wire format.

`FakeTranscriptions`: OpenAI's `POST /v1/audio/transcriptions`, a multipart form (`file`, `model`,
`language`, `response_format`, `temperature`) answered with `{"text": ...}` for `response_format=json`; a
wrong bearer token gets 401 with an error object quoting part of the key, as the real service's does.

`FakeWyoming`: a Wyoming ASR server built on the `wyoming` package's own server classes: it reads
transcribe / audio-start / audio-chunk / audio-stop and answers one `transcript` event.
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import async_read_event, async_write_event


@dataclass
class Heard:
    """One request as the fake server received it."""

    audio: bytes
    rate: int
    language: str | None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeTranscriptions:
    """Async context manager serving the fake on a free loopback port; `url` is the API base (…/v1)."""

    api_key: str = "sk-stt-fake"
    text: str = "what time do you open"
    status: int = 200
    delay_s: float = 0.0
    # Replaces the JSON answer's bytes when set (hostile or broken servers).
    raw_body: bytes | None = None
    heard: list[Heard] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeTranscriptions:
        app = web.Application()
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _transcriptions(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            quoted = request.headers.get("Authorization", "")[-6:]
            error = {
                "error": {
                    "message": f"Incorrect API key provided: ...{quoted}",
                    "type": "invalid_request_error",
                }
            }
            return web.json_response(error, status=401)
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        with wave.open(io.BytesIO(upload.file.read()), "rb") as wav:
            audio, rate = wav.readframes(wav.getnframes()), wav.getframerate()
        fields = {key: str(value) for key, value in form.items() if key != "file"}
        self.heard.append(Heard(audio, rate, fields.get("language"), fields))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if self.status != 200:
            return web.json_response({"error": {"message": "server error"}}, status=self.status)
        if self.raw_body is not None:
            return web.Response(body=self.raw_body, content_type="application/json")
        return web.json_response({"text": self.text})


@dataclass
class FakeWyoming:
    """Async context manager serving a Wyoming ASR fake on a free loopback port; `url` is tcp://host:port."""

    text: str = "what time do you open"
    delay_s: float = 0.0
    # Replaces the transcript event (a hostile or broken server): given the stream, writes what it likes.
    answer: Callable[[asyncio.StreamWriter], Awaitable[None]] | None = None
    heard: list[Heard] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> FakeWyoming:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"tcp://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        language: str | None = None
        rate, audio = 0, bytearray()
        try:
            while (event := await async_read_event(reader)) is not None:
                if Transcribe.is_type(event.type):
                    language = Transcribe.from_event(event).language
                elif AudioStart.is_type(event.type):
                    rate = AudioStart.from_event(event).rate
                elif AudioChunk.is_type(event.type):
                    audio += AudioChunk.from_event(event).audio
                elif AudioStop.is_type(event.type):
                    self.heard.append(Heard(bytes(audio), rate, language))
                    await asyncio.sleep(self.delay_s)
                    if self.answer is not None:
                        await self.answer(writer)
                    else:
                        await async_write_event(Transcript(text=self.text).event(), writer)
                    break
        finally:
            writer.close()
