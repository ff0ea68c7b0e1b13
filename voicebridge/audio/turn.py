"""Streaming turn detection for one call: webrtcvad per 20 ms frame, endpointing by silence length.

Fed PCM16 at 16 kHz in arbitrary slices; emits what the call needs to decide: speech began, speech has
lasted long enough to count as a barge-in, a pause began (time to transcribe speculatively), speech
resumed, and the turn ended (with the utterance audio).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from voicebridge.audio.resample import StreamResampler
from voicebridge.config.schema import TurnConfig

DETECTOR_RATE = 16_000
FRAME_MS = 20
FRAME_BYTES = DETECTOR_RATE * FRAME_MS // 1000 * 2
# Onset needs a few voiced frames in a row so a click does not open an utterance.
ONSET_FRAMES = 3
PRE_ROLL_MS = 200
TAIL_MS = 200


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Voice onset: a new utterance opened."""


@dataclass(frozen=True, slots=True)
class SpeechSustained:
    """The utterance has had `barge_in_min_ms` of voiced audio: real speech, not a blip."""


@dataclass(frozen=True, slots=True)
class PauseStarted:
    """Silence has lasted `speculative_ms` inside an utterance; `pcm16` is the utterance so far."""

    pcm16: bytes


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech came back after a PauseStarted: any speculative work on that pause is stale."""


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """The caller finished a turn; `forced` when the maximum utterance length cut it. `silence_ms` is the
    pause that ended it (the caller's voice-to-voice wait includes it)."""

    pcm16: bytes
    speech_ms: int
    forced: bool = False
    silence_ms: int = 0


@dataclass(frozen=True, slots=True)
class BlipDiscarded:
    """An utterance too short to be speech ended; nothing to transcribe."""

    speech_ms: int


TurnEvent = SpeechStarted | SpeechSustained | PauseStarted | SpeechResumed | TurnEnded | BlipDiscarded


def detector_ingress(rate: int) -> StreamResampler:
    """A call's audio at its own rate → the detector's 16 kHz, with as little held back as soxr allows.

    soxr's HQ filter holds back 65-100 ms of a stream, and every turn end and barge-in waited for it;
    the quick filter holds back 0.25 ms, and Whisper's WER on 8 kHz phone audio is the same.
    """
    return StreamResampler(rate, DETECTOR_RATE, quality="QQ")


class TurnDetector:
    """Per-call endpointing state; cheap enough to run on the event loop (~3 µs per frame)."""

    def __init__(self, config: TurnConfig) -> None:
        self._vad = webrtcvad.Vad(config.vad_aggressiveness)
        # webrtcvad judges spectral shape, not loudness: it calls faint line hiss speech, and its hangover
        # marks digital silence after a word as voiced. Frames under the energy floor are never speech.
        self._energy_floor = (10 ** (config.energy_floor_dbfs / 20) * 32768) ** 2
        self._eot_frames = max(1, config.end_of_turn_silence_ms // FRAME_MS)
        self._speculative_frames = (
            max(1, config.speculative_ms // FRAME_MS)
            if 0 < config.speculative_ms < config.end_of_turn_silence_ms
            else 0
        )
        self._min_speech_frames = config.min_speech_ms // FRAME_MS
        self._sustained_frames = max(1, config.barge_in_min_ms // FRAME_MS)
        self._max_frames = int(config.max_utterance_s * 1000) // FRAME_MS
        self._pending = b""
        self._pre_roll: deque[bytes] = deque(maxlen=PRE_ROLL_MS // FRAME_MS)
        self._onset_run = 0
        self._reset_utterance()

    def _reset_utterance(self) -> None:
        self._in_utterance = False
        self._frames: list[bytes] = []
        self._voiced = 0
        self._silence_run = 0
        self._last_voiced_index = 0
        self._sustained_sent = False
        self._paused = False
        # How long the current pause may last: end_of_turn_silence_ms unless end_pause_after said otherwise.
        self._pause_limit_frames = self._eot_frames

    @property
    def in_utterance(self) -> bool:
        """True while an utterance is open (speech started and the turn has not ended)."""
        return self._in_utterance

    @property
    def silence_ms(self) -> int:
        """How long the caller has been silent inside the open utterance (0 while speaking)."""
        return self._silence_run * FRAME_MS if self._in_utterance else 0

    def open_utterance_audio(self) -> bytes | None:
        """The open utterance's audio so far (for a transcription while it goes on); None when none is."""
        return self._utterance_audio() if self._in_utterance else None

    def feed(self, pcm16: bytes) -> list[TurnEvent]:
        """Consume audio at 16 kHz; return the events it caused, in order."""
        data = self._pending + pcm16
        whole = len(data) - len(data) % FRAME_BYTES
        self._pending = data[whole:]
        events: list[TurnEvent] = []
        for offset in range(0, whole, FRAME_BYTES):
            self._frame(data[offset : offset + FRAME_BYTES], events)
        return events

    def end_pause_after(self, ms: int) -> TurnEnded | None:
        """Let the current pause last `ms` before it ends the turn (adaptive end of turn, decided from the
        pause's speculative transcript). When it has lasted that long already, the turn ends now: the
        event is returned. Outside a pause (speech resumed meanwhile) it does nothing."""
        if not (self._in_utterance and self._paused):
            return None
        self._pause_limit_frames = max(1, ms // FRAME_MS)
        if self._silence_run < self._pause_limit_frames:
            return None
        events: list[TurnEvent] = []
        self._end(events, forced=False)
        ended = events[0]
        return ended if isinstance(ended, TurnEnded) else None

    def reset(self) -> None:
        """Forget any open utterance (used when the call stops listening)."""
        self._pending = b""
        self._pre_roll.clear()
        self._onset_run = 0
        self._reset_utterance()

    def _frame(self, frame: bytes, events: list[TurnEvent]) -> None:
        samples = np.frombuffer(frame, "<i2").astype(np.float32)
        voiced = float(np.dot(samples, samples)) / len(samples) >= self._energy_floor and self._vad.is_speech(
            frame, DETECTOR_RATE
        )
        if not self._in_utterance:
            self._pre_roll.append(frame)
            self._onset_run = self._onset_run + 1 if voiced else 0
            if self._onset_run >= ONSET_FRAMES:
                self._in_utterance = True
                self._frames = list(self._pre_roll)
                self._pre_roll.clear()
                self._voiced = self._onset_run
                self._last_voiced_index = len(self._frames)
                self._onset_run = 0
                events.append(SpeechStarted())
                self._check_sustained(events)
            return

        self._frames.append(frame)
        if voiced:
            self._voiced += 1
            self._last_voiced_index = len(self._frames)
            if self._paused:
                self._paused = False
                self._pause_limit_frames = self._eot_frames
                events.append(SpeechResumed())
            self._silence_run = 0
            self._check_sustained(events)
        else:
            self._silence_run += 1
            if self._silence_run == self._speculative_frames and self._voiced >= self._min_speech_frames:
                self._paused = True
                events.append(PauseStarted(self._utterance_audio()))
            if self._silence_run >= self._pause_limit_frames:
                self._end(events, forced=False)
                return
        if len(self._frames) >= self._max_frames:
            self._end(events, forced=True)

    def _check_sustained(self, events: list[TurnEvent]) -> None:
        if not self._sustained_sent and self._voiced >= self._sustained_frames:
            self._sustained_sent = True
            events.append(SpeechSustained())

    def _utterance_audio(self) -> bytes:
        # Keep a short tail of the silence: Whisper clips final words when audio stops dead on them.
        end = min(len(self._frames), self._last_voiced_index + TAIL_MS // FRAME_MS)
        return b"".join(self._frames[:end])

    def _end(self, events: list[TurnEvent], forced: bool) -> None:
        speech_ms = self._voiced * FRAME_MS
        if self._voiced >= max(1, self._min_speech_frames):
            events.append(TurnEnded(self._utterance_audio(), speech_ms, forced, self._silence_run * FRAME_MS))
        else:
            events.append(BlipDiscarded(speech_ms))
        self._reset_utterance()
