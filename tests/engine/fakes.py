"""Fakes of the call's outside services that implement the real protocols, each scriptable per call.

SpeechToText, TextToSpeech and Backend (voicebridge/speech/base.py, voicebridge/backends/base.py) and the
provider Translator: the call under test cannot tell them from the real engines, but the test decides
what each one says, when, and whether it fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from voicebridge.backends.base import (
    BackendError,
    BudgetDecision,
    BusinessSettings,
    CallInfo,
    ConversationTurn,
    ReplyAction,
)
from voicebridge.speech.base import DEFAULT_VOICE, SpeechEngineError, Transcript, Voice
from voicebridge.speech.scheduler import always_confirmed

# The fake TTS speaks this long per character of text: short replies, so tests run in fractions of a second.
TTS_SECONDS_PER_CHAR = 0.004
TTS_LEVEL = 1000


# --- speech to text ---------------------------------------------------------------------------------


@dataclass
class Hearing:
    """What the fake STT answers to one transcription: text, or an error, after an optional hold."""

    text: str = "hello there"
    hold: asyncio.Event | None = None
    delay_s: float = 0.0
    error: str = ""
    # The language the fake reports having decoded in ("": the one it was asked for).
    language: str = ""


@dataclass
class FakeSTT:
    """Answers transcriptions from a script, one Hearing per call (then `default`)."""

    script: list[Hearing] = field(default_factory=list)
    default: Hearing = field(default_factory=Hearing)
    # How long a cancelled transcription takes to let go (a real engine waits for its worker thread).
    cancel_delay_s: float = 0.0
    name: str = "fake-stt"
    calls: list[bytes] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: int = 0
    # Each transcription's `confirmed`: whether the turn it transcribes has ended (else it is a guess).
    confirmations: list[Callable[[], bool]] = field(default_factory=list)
    # Each transcription's language, as the call asked for it.
    languages: list[str] = field(default_factory=list)

    def hear(self, text: str = "hello there", **options: Any) -> Hearing:
        """Script the next unscripted transcription; returns it (e.g. to set its hold later)."""
        hearing = Hearing(text, **options)
        self.script.append(hearing)
        return hearing

    async def transcribe(
        self,
        pcm16: bytes,
        sample_rate: int,
        confirmed: Callable[[], bool] = always_confirmed,
        language: str = "",
    ) -> Transcript:
        hearing = self.script.pop(0) if self.script else self.default
        self.calls.append(pcm16)
        self.confirmations.append(confirmed)
        self.languages.append(language)
        try:
            if hearing.hold is not None:
                await hearing.hold.wait()
            if hearing.delay_s:
                await asyncio.sleep(hearing.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            if self.cancel_delay_s:
                await asyncio.shield(asyncio.sleep(self.cancel_delay_s))
            raise
        if hearing.error:
            raise SpeechEngineError(hearing.error)
        self.finished.append(hearing.text)
        seconds = len(pcm16) / 2 / sample_rate
        heard_in = hearing.language or language
        return Transcript(hearing.text, seconds, hearing.delay_s, self.name, language=heard_in)


# --- text to speech ---------------------------------------------------------------------------------


def tts_pcm(text: str, sample_rate: int) -> bytes:
    """The fake TTS's audio for `text`: a constant level, its length proportional to the text."""
    samples = max(1, int(len(text) * TTS_SECONDS_PER_CHAR * sample_rate))
    return TTS_LEVEL.to_bytes(2, "little", signed=True) * samples


@dataclass
class FakeTTS:
    """Deterministic PCM per text, in two pieces (like a streaming engine); holds and failures by text."""

    name: str = "fake-tts"
    delay_s: float = 0.0
    # A sentence containing a key waits for its event before its second piece.
    holds: dict[str, asyncio.Event] = field(default_factory=dict)
    fail_on: set[str] = field(default_factory=set)
    # How long a cancelled synthesis takes to let go (a network engine closing its connection), or until when.
    cancel_delay_s: float = 0.0
    cancel_hold: asyncio.Event | None = None
    spoken: list[str] = field(default_factory=list)
    # The voice of each synthesis, in the order of `spoken`.
    voices: list[Voice] = field(default_factory=list)
    cancelled: int = 0

    async def synthesize(
        self, text: str, sample_rate: int, voice: Voice = DEFAULT_VOICE
    ) -> AsyncIterator[bytes]:
        self.spoken.append(text)
        self.voices.append(voice)
        if any(key in text for key in self.fail_on):
            raise SpeechEngineError(f"fake TTS refuses {text[:30]!r}")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        pcm = tts_pcm(text, sample_rate)
        half = len(pcm) // 4 * 2
        yield pcm[:half]
        try:
            for key, event in self.holds.items():
                if key in text:
                    await event.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            if self.cancel_delay_s:
                await asyncio.shield(asyncio.sleep(self.cancel_delay_s))
            if self.cancel_hold is not None:
                await asyncio.shield(self.cancel_hold.wait())
            raise
        yield pcm[half:]


# --- the backend ------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One scripted backend reply: deltas (and an action), an optional hold after the first, an error;
    `delay_s` before the first delta (a backend slow to start answering)."""

    deltas: list[str | ReplyAction] | None = None
    hold: asyncio.Event | None = None
    error: str = ""
    delay_s: float = 0.0


@dataclass
class Request:
    """One reply request as the backend received it, and what became of its stream."""

    kind: str
    text: str
    history: list[ConversationTurn]
    closed: bool = False
    completed: bool = False
    # The task that closed the stream: the reply's own task, or a garbage collector's finaliser.
    closed_by: str = ""
    # What the backend was told of the call (its business's system prompt among it).
    call: CallInfo | None = None


@dataclass
class FakeBackend:
    """Replies "You said <text>." unless scripted; records every request and how its stream ended."""

    speculative_safe: bool = True
    script: list[Answer] = field(default_factory=list)
    name: str = "fake"
    requests: list[Request] = field(default_factory=list)
    open_streams: int = 0
    most_open: int = 0

    def answer(self, *deltas: str | ReplyAction, **options: Any) -> Answer:
        """Script the next unscripted reply."""
        answer = Answer(list(deltas) if deltas else None, **options)
        self.script.append(answer)
        return answer

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def reply(
        self, call: CallInfo, text: str, history: list[ConversationTurn]
    ) -> AsyncGenerator[str | ReplyAction, None]:
        return self._stream(Request("reply", text, list(history), call=call))

    def digits(
        self, call: CallInfo, digits: str, history: list[ConversationTurn]
    ) -> AsyncGenerator[str | ReplyAction, None]:
        return self._stream(Request("digits", digits, list(history), call=call))

    async def _stream(self, request: Request) -> AsyncGenerator[str | ReplyAction, None]:
        self.requests.append(request)
        answer = self.script.pop(0) if self.script else Answer()
        deltas = answer.deltas if answer.deltas is not None else [f"You said {request.text}."]
        self.open_streams += 1
        self.most_open = max(self.most_open, self.open_streams)
        try:
            if answer.delay_s:
                await asyncio.sleep(answer.delay_s)
            for index, delta in enumerate(deltas):
                if index == 1 and answer.hold is not None:
                    await answer.hold.wait()
                yield delta
            if answer.error:
                raise BackendError(answer.error)
            request.completed = True
        finally:
            self.open_streams -= 1
            request.closed = True
            task = asyncio.current_task()
            request.closed_by = task.get_name() if task is not None else ""


@dataclass
class BudgetBackend(FakeBackend):
    """A FakeBackend that also answers the budget check and the business settings lookup."""

    decision: BudgetDecision = field(default_factory=lambda: BudgetDecision(True, "", 10.0))
    businesses: dict[str, BusinessSettings] = field(default_factory=dict)

    async def budget_check(
        self, call_sid: str, from_number: str, to_number: str, provider: str
    ) -> BudgetDecision:
        return self.decision

    async def business(self, to_number: str) -> BusinessSettings | None:
        return self.businesses.get(to_number)


# --- the provider side --------------------------------------------------------------------------------


@dataclass
class FakeTranslator:
    """Serialises outbound messages as small JSON objects the wire capture can read back."""

    provider: str = "exotel"
    sample_rate: int = 8000
    outbound_chunk_ms: int = 200

    def parse(self, message: dict[str, Any]) -> Any:
        raise NotImplementedError("the engine tests feed the call events, not wire messages")

    def media(self, pcm16: bytes) -> str:
        return json.dumps({"event": "media", "bytes": len(pcm16)})

    def mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "name": name})

    def clear(self) -> str:
        return json.dumps({"event": "clear"})


@dataclass
class Wire:
    """Captures what the call sends; like a provider, echoes each mark (when `echo_marks`)."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    echo_marks: bool = True
    on_mark: Callable[[str], None] | None = None
    closed: bool = False

    async def send_text(self, text: str) -> None:
        message = json.loads(text)
        self.frames.append(message)
        if message["event"] == "mark" and self.echo_marks and self.on_mark is not None:
            # A provider echoes later, from its own read loop: never from inside our send.
            asyncio.get_running_loop().call_soon(self.on_mark, message["name"])

    async def close_socket(self) -> None:
        self.closed = True

    def kinds(self) -> list[str]:
        return [frame["event"] for frame in self.frames]

    def marks(self) -> list[str]:
        return [frame["name"] for frame in self.frames if frame["event"] == "mark"]


@dataclass
class FakeSocket:
    """The server side of a provider WebSocket as StreamSession reads it: scripted text frames, sends kept."""

    incoming: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    sent: list[str] = field(default_factory=list)
    closed: bool = False
    close_code: int | None = None

    def __aiter__(self) -> FakeSocket:
        return self

    async def __anext__(self) -> Any:
        from aiohttp import WSMessage, WSMsgType

        text = await self.incoming.get()
        if text is None:
            raise StopAsyncIteration
        return WSMessage(WSMsgType.TEXT, text, None)

    def exception(self) -> BaseException | None:
        return None

    async def send_str(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int = 1000, message: bytes = b"") -> bool:
        if not self.closed:
            self.closed, self.close_code = True, code
            self.incoming.put_nowait(None)
        return True
