"""Speech recognition on a Wyoming ASR server (`stt.engine = "wyoming"`), e.g. wyoming-faster-whisper on
a GPU box, through the `wyoming` client package.

One TCP connection per utterance, as Wyoming clients do: transcribe (with the language), audio-start,
the audio in chunks, audio-stop; the server answers one transcript event (streaming servers send
transcript-start/-chunk/-stop first, which are skipped). The protocol is in docs/remote-stt.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient

from voicebridge.config.schema import SttConfig
from voicebridge.speech.base import SpeechEngineError
from voicebridge.speech.remote_stt import RemoteSTT

# 100 ms of 16 kHz audio per chunk event, as Wyoming satellites send it.
CHUNK_SAMPLES = 1600
# Events a server may send before its transcript (streaming partials, info); more is not Wyoming.
MAX_EVENTS = 1000
# What a dead server or one that does not speak Wyoming raises in the client: a refused or reset
# connection, bad JSON or an over-long line (ValueError), an event missing its fields.
FAULTS = (OSError, EOFError, asyncio.IncompleteReadError, ValueError, LookupError, TypeError, AttributeError)


class WyomingSTT(RemoteSTT):
    """Each utterance is one Wyoming transcribe exchange with the server at `stt.url` (tcp://host:port)."""

    name = "wyoming"

    def __init__(self, config: SttConfig) -> None:
        super().__init__(config)
        parts = urlsplit(config.url)  # checked by the config: tcp://host:port
        self._host, self._port = parts.hostname or "", parts.port or 0

    async def _request(self, pcm16: bytes, sample_rate: int, language: str | None) -> tuple[str, str]:
        client = AsyncTcpClient(self._host, self._port)
        try:
            await client.connect()
            await client.write_event(Transcribe(language=language).event())
            await client.write_event(AudioStart(rate=sample_rate, width=2, channels=1).event())
            step = CHUNK_SAMPLES * 2 * sample_rate // 16_000
            for offset in range(0, len(pcm16), step):
                chunk = AudioChunk(rate=sample_rate, width=2, channels=1, audio=pcm16[offset : offset + step])
                await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            for _ in range(MAX_EVENTS):
                event = await client.read_event()
                if event is None:  # the client reads a line that is not a Wyoming event as the end too
                    raise SpeechEngineError(
                        f"wyoming STT at {self._address}: no transcript (closed, or not a Wyoming event)"
                    )
                if event.type == "error":  # its message is the server's text: not ours to log
                    raise SpeechEngineError(f"wyoming STT at {self._address}: the server reported an error")
                if Transcript.is_type(event.type):
                    heard = Transcript.from_event(event)
                    if not isinstance(heard.text, str):
                        raise SpeechEngineError(f"wyoming STT at {self._address}: a transcript without text")
                    return heard.text, heard.language if isinstance(heard.language, str) else ""
            raise SpeechEngineError(f"wyoming STT at {self._address}: no transcript in {MAX_EVENTS} events")
        except FAULTS as exc:
            # Named by kind only, never echoing what the server sent.
            raise SpeechEngineError(f"wyoming STT at {self._address}: {_reason(exc)}") from None
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                await client.disconnect()

    @property
    def _address(self) -> str:
        return f"{self._host}:{self._port}"

    @property
    def label(self) -> str:
        return f"wyoming STT at {self._address}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionError | asyncio.IncompleteReadError | EOFError):
        return "connection lost"
    if isinstance(exc, OSError):
        return f"cannot connect ({type(exc).__name__})"
    return f"not a Wyoming answer ({type(exc).__name__})"
