"""What every remote STT engine shares: a concurrency limit per server with the local engine's ordering
(confirmed turns before speculative guesses, a cancelled waiter never sent), a deadline per utterance,
and the same cleaning of what comes back.

A subclass says only how one utterance goes over its wire (`_request`). Whatever goes wrong there, a
refused connection, a timeout, an error status, an answer that is not the protocol's, is raised as one
SpeechEngineError line, so the fallback (speech/stt_fallback.py) or the call's apology can take over.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from collections.abc import Callable

from voicebridge.config.schema import SttConfig
from voicebridge.speech.base import SpeechEngineError, SttCapacity, Transcript
from voicebridge.speech.scheduler import LoopSchedulers, always_confirmed
from voicebridge.speech.stt import clean_text

# A server's answer is hostile input like any other: a turn is a few seconds of speech, and no caller
# says 2000 characters in one.
MAX_TEXT_CHARS = 2000


def printable(text: str) -> str:
    """`text` with control and format characters (escapes, NULs, bidi overrides) turned into spaces: it
    goes on to logs, the backend and the call record."""
    return "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)


def whisper_language(language: str, configured: str) -> str | None:
    """The language code a server is asked for: the call's BCP-47 tag (or `stt.language` when the call
    has none) cut to its primary subtag, as Whisper names languages; None for "auto" (the server detects)."""
    chosen = (language or configured).strip()
    if not chosen or chosen.lower() == "auto":
        return None
    return chosen.split("-")[0].split("_")[0].lower()


class RemoteSTT(SttCapacity):
    """Speech recognition on another machine; at most `stt.remote_concurrency` utterances there at once."""

    name = "remote"

    def __init__(self, config: SttConfig) -> None:
        self._config = config
        self.workers = config.remote_concurrency
        self._schedulers = LoopSchedulers(self.workers)

    @property
    def queue_depth(self) -> int:
        """Utterances waiting for a free slot on the server."""
        return self._schedulers.waiting

    async def transcribe(
        self,
        pcm16: bytes,
        sample_rate: int,
        confirmed: Callable[[], bool] = always_confirmed,
        language: str = "",
    ) -> Transcript:
        """Send one utterance to the server and return what it heard; SpeechEngineError on any fault."""
        if sample_rate <= 0:
            raise SpeechEngineError(f"{self.name} STT needs a positive sample rate, not {sample_rate}")
        started = time.perf_counter()
        scheduler = self._schedulers.current()
        queued = await scheduler.acquire(confirmed)
        code = whisper_language(language, self._config.language)
        try:
            async with asyncio.timeout(self._config.remote_timeout_s):
                text, heard_language = await self._request(pcm16, sample_rate, code)
        except TimeoutError:
            raise SpeechEngineError(
                f"{self.label}: no transcript within {self._config.remote_timeout_s:g}s"
            ) from None
        finally:
            scheduler.release()
        return Transcript(
            text=clean_text(printable(text[:MAX_TEXT_CHARS])),
            audio_seconds=len(pcm16) / 2 / sample_rate,
            processing_seconds=time.perf_counter() - started,
            engine=self.name,
            queued_seconds=queued,
            language=heard_language if heard_language.isalpha() and len(heard_language) <= 8 else "",
        )

    @property
    def label(self) -> str:
        """How the log names this server: its engine, and where it is when that says more."""
        return f"{self.name} STT"

    async def _request(self, pcm16: bytes, sample_rate: int, language: str | None) -> tuple[str, str]:
        """One utterance over the wire: (the text, the language the server says it heard or "")."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the engine holds open (a connection pool); the engine is not used afterwards."""
