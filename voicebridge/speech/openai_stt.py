"""Speech recognition on an OpenAI-compatible server (`stt.engine = "openai"`): vLLM, speaches,
faster-whisper-server, or a cloud API, through `POST {stt.url}/audio/transcriptions`.

The request is OpenAI's documented one (docs/remote-stt.md): multipart form with `file` (here a WAV of
the turn), `model`, `language` when known, `response_format=json` and `temperature=0`; the answer is
`{"text": "..."}`. The key goes as a bearer token and is never logged; error messages name the status or
the kind of fault, never a response body (an error body may echo part of the key back).
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from voicebridge.audio.wav import wav_bytes
from voicebridge.config.schema import SttConfig
from voicebridge.speech.base import SpeechEngineError
from voicebridge.speech.remote_stt import RemoteSTT

# {"text": ...} for a few seconds of speech is well under this; a larger answer is not a transcript.
MAX_BODY_BYTES = 64 * 1024


class OpenAiSTT(RemoteSTT):
    """Each utterance is one transcription request to `stt.url`, over one connection pool per daemon."""

    name = "openai"

    def __init__(self, config: SttConfig) -> None:
        super().__init__(config)
        self._endpoint = config.url.rstrip("/") + "/audio/transcriptions"
        key = config.api_key.get_secret_value()
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        # Made on first use, on the loop that uses it (the engine is built before the loop runs calls).
        self._session: aiohttp.ClientSession | None = None

    async def _request(self, pcm16: bytes, sample_rate: int, language: str | None) -> tuple[str, str]:
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(pcm16, sample_rate), filename="turn.wav", content_type="audio/wav")
        form.add_field("model", self._config.model)
        form.add_field("response_format", "json")
        form.add_field("temperature", "0")
        if language:
            form.add_field("language", language)
        try:
            async with self._client().post(self._endpoint, data=form, headers=self._headers) as response:
                if response.status != 200:
                    raise SpeechEngineError(f"openai STT answered HTTP {response.status}")
                body = await response.content.read(MAX_BODY_BYTES + 1)
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            raise SpeechEngineError(f"openai STT: {_reason(exc)}") from None
        if len(body) > MAX_BODY_BYTES:
            raise SpeechEngineError(f"openai STT answered more than {MAX_BODY_BYTES} bytes")
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            raise SpeechEngineError("openai STT answered something that is not JSON") from None
        text = answer.get("text") if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise SpeechEngineError('openai STT answered JSON without a "text" string')
        heard = answer.get("language")
        return text, heard if isinstance(heard, str) else ""

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _reason(exc: BaseException) -> str:
    """A short description of a transport failure; never str(exc), which can carry request details."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect ({type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    return type(exc).__name__
