"""The small interfaces every speech engine satisfies, and what they hand back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from voicebridge.speech.scheduler import always_confirmed


class SpeechEngineError(Exception):
    """A speech engine could not do its job; the message is one line fit for an operator."""


@dataclass(frozen=True, slots=True)
class Transcript:
    """What an STT engine heard in one utterance."""

    text: str
    audio_seconds: float
    processing_seconds: float
    engine: str
    no_speech_prob: float = 0.0
    # Seconds spent waiting for a free worker, included in processing_seconds (the sign of overload).
    queued_seconds: float = 0.0
    # The language it was decoded in (Whisper's code, e.g. "hi"); "" when the engine does not say.
    language: str = ""


class SpeechToText(Protocol):
    """Turns one utterance of PCM16 mono audio into text, off the event loop."""

    name: str

    async def transcribe(
        self,
        pcm16: bytes,
        sample_rate: int,
        confirmed: Callable[[], bool] = always_confirmed,
        language: str = "",
    ) -> Transcript:
        """Transcribe a whole utterance; silence and noise give an empty text.

        `confirmed` says whether the turn is known to be over (False while it is a speculative guess);
        `language` is the call's (a BCP-47 tag, "auto" to detect, "" for the engine's configured one).
        """
        ...


@runtime_checkable
class SttCapacity(Protocol):
    """An STT engine that decodes a bounded number of utterances at once and can say how many wait.

    The daemon sizes its overload guard from `workers` and exports `queue_depth` as a gauge; an engine
    without this capacity is counted as one worker with no queue to report.
    """

    workers: int

    @property
    def queue_depth(self) -> int:
        """Utterances waiting for a free worker now."""
        ...


@runtime_checkable
class Closable(Protocol):
    """An engine that holds something to release (a model, worker threads, a session) once done with."""

    def close(self) -> None:
        """Release it; the engine is not used afterwards."""
        ...


@runtime_checkable
class AsyncClosable(Protocol):
    """An engine that holds something only the event loop can release (an HTTP connection pool)."""

    async def aclose(self) -> None:
        """Release it; the engine is not used afterwards."""
        ...


class OwnSpeechToText(SpeechToText, Closable, Protocol):
    """An STT engine built for one call: whoever built it closes it once the call is over."""


@dataclass(frozen=True, slots=True)
class Voice:
    """The voice a call speaks with: `name` an Azure voice name or a Piper model path ("": the engine's
    configured voice), `language` the call's BCP-47 tag ("": the voice's own). Each engine uses the names
    of its kind and speaks other names with its configured voice."""

    name: str = ""
    language: str = ""


DEFAULT_VOICE = Voice()


class TextToSpeech(Protocol):
    """Turns text into PCM16 mono audio at the caller's rate, a sentence (or a network chunk) at a time."""

    name: str

    def synthesize(self, text: str, sample_rate: int, voice: Voice = DEFAULT_VOICE) -> AsyncIterator[bytes]:
        """Yield PCM16LE mono chunks at `sample_rate` as soon as each is ready."""
        ...
