"""Answering-machine detection on the first seconds of an answered outbound call: pure signal work.

Fed the callee's PCM16 (8 or 16 kHz) in arbitrary slices, it decides who answered, by the shape of the
greeting, as a person hears it:
- a person says a short "Hello?" (≲ 1.5 s) and then pauses for the caller to speak: `human`;
- a machine talks on for 3+ s without a pause long enough for a reply: `machine`;
- a steady single-frequency tone (the beep) is a machine whatever came before it: `machine`;
- none of these within the decision timeout: `unknown` (the call treats that as a person).

After a `machine` verdict it goes on listening for when to leave the message: the beep's end, or (no beep)
the greeting's end followed by a silence, or a cap. Times are audio seconds from the first sample fed.
No I/O, no asyncio; the frame classifier is the turn detector's (webrtcvad above an energy floor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import webrtcvad

from voicebridge.config.schema import AmdConfig
from voicebridge.outbound.dialer import AnsweredBy

FRAME_MS = 20
# Onset needs a few voiced frames in a row so a click does not count as the greeting starting.
ONSET_FRAMES = 3
# Tone frames must keep within this of the run's first frequency: a beep is steady, a vowel glides.
TONE_DRIFT_HZ = 60.0
VAD_RATES = (8000, 16000, 32000, 48000)
# Less voiced time than this before a pause is no greeting ("Hi" is ~250 ms): noise on the line.
MIN_WORD_MS = 200

CueReason = Literal["beep_end", "silence", "cap"]


@dataclass(frozen=True, slots=True)
class AmdVerdict:
    """Who answered, when (audio seconds) and why ("short_greeting", "long_greeting", "beep", "timeout")."""

    answered_by: AnsweredBy
    at_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class BeepHeard:
    """A beep ended at `ended_s`; it began at `started_s`, at about `hz`."""

    started_s: float
    ended_s: float
    hz: float


@dataclass(frozen=True, slots=True)
class MessageCue:
    """Time to leave the voicemail message (audio seconds), and what said so."""

    at_s: float
    reason: CueReason


AmdEvent = AmdVerdict | BeepHeard | MessageCue


class AnsweringMachineDetector:
    """One call's detector; cheap enough for the event loop (one 20 ms rfft per frame)."""

    def __init__(self, config: AmdConfig, rate: int) -> None:
        if rate not in VAD_RATES:
            raise ValueError(f"answering-machine detection needs 8/16/32/48 kHz audio, not {rate} Hz")
        self._c = config
        self._rate = rate
        self._frame_samples = rate * FRAME_MS // 1000
        self._vad = webrtcvad.Vad(config.vad_aggressiveness)
        self._energy_floor = (10 ** (config.energy_floor_dbfs / 20) * 32768) ** 2
        self._window = np.hanning(self._frame_samples)
        self._freqs = np.fft.rfftfreq(self._frame_samples, 1 / rate)
        self._pending = b""
        self._frames = 0
        self.verdict: AmdVerdict | None = None
        self.cue: MessageCue | None = None
        # The greeting: voiced time, when it began, when the last voiced frame was, the silence since.
        self._onset_run = 0
        self._speech_ms = 0
        self._greeting_start: int | None = None
        self._last_voiced = -1
        self._silence_run = 0
        # The tone run under way: its first frame, its length in frames, its frequency.
        self._tone_start = -1
        self._tone_frames = 0
        self._tone_hz = 0.0
        self._verdict_frame = 0

    @property
    def done(self) -> bool:
        """Nothing more to learn: a human/unknown verdict, or a machine whose message cue came."""
        return self.cue is not None or (self.verdict is not None and self.verdict.answered_by != "machine")

    def feed(self, pcm16: bytes) -> list[AmdEvent]:
        """Consume audio at the configured rate; the events it caused, in order."""
        data = self._pending + pcm16
        step = self._frame_samples * 2
        whole = len(data) - len(data) % step
        self._pending = data[whole:]
        events: list[AmdEvent] = []
        for offset in range(0, whole, step):
            if self.done:
                break
            self._frame(data[offset : offset + step], events)
        return events

    def override(self, answered_by: AnsweredBy, reason: str = "provider") -> AmdVerdict:
        """The provider's verdict (Twilio's AnsweredBy) replaces ours, at the audio time reached so far."""
        self.verdict = AmdVerdict(answered_by, self._seconds(self._frames), reason)
        self._verdict_frame = self._frames
        return self.verdict

    def _seconds(self, frames: int) -> float:
        return round(frames * FRAME_MS / 1000, 3)

    def _frame(self, frame: bytes, events: list[AmdEvent]) -> None:
        index = self._frames
        self._frames += 1
        samples = np.frombuffer(frame, "<i2").astype(np.float64)
        energy = float(np.dot(samples, samples)) / len(samples)
        loud = energy >= self._energy_floor
        tone_hz = self._tone(samples) if loud else None
        voiced = loud and tone_hz is None and self._vad.is_speech(frame, self._rate)
        self._track_tone(index, tone_hz, events)
        self._track_speech(index, voiced)
        if self.verdict is None:
            self._decide(index, events)
        elif self.verdict.answered_by == "machine" and self.cue is None:
            self._wait_for_cue(index, events)

    def _tone(self, samples: np.ndarray) -> float | None:
        """The frame's frequency when nearly all its energy sits in one narrow peak in the beep band."""
        spectrum = np.abs(np.fft.rfft(samples * self._window)) ** 2
        total = float(spectrum.sum())
        if total <= 0:
            return None
        peak = int(np.argmax(spectrum))
        # The Hann window spreads a pure tone over ±2 bins (±100 Hz at 20 ms frames).
        share = float(spectrum[max(0, peak - 2) : peak + 3].sum()) / total
        hz = float(self._freqs[peak])
        if share >= self._c.beep_purity and self._c.beep_min_hz <= hz <= self._c.beep_max_hz:
            return hz
        return None

    def _track_tone(self, index: int, hz: float | None, events: list[AmdEvent]) -> None:
        if hz is not None and (self._tone_frames == 0 or abs(hz - self._tone_hz) <= TONE_DRIFT_HZ):
            if self._tone_frames == 0:
                self._tone_start, self._tone_hz = index, hz
            self._tone_frames += 1
            return
        long_enough = self._tone_frames * FRAME_MS >= self._c.beep_min_ms
        if long_enough and self._tone_frames * FRAME_MS <= self._c.beep_max_ms:
            beep = BeepHeard(self._seconds(self._tone_start), self._seconds(index), round(self._tone_hz, 1))
            events.append(beep)
            if self.verdict is None:
                self._set_verdict("machine", index, "beep", events)
            if self.verdict is not None and self.verdict.answered_by == "machine" and self.cue is None:
                self.cue = MessageCue(beep.ended_s, "beep_end")
                events.append(self.cue)
        self._tone_frames = 0
        if hz is not None:  # a new tone at another frequency starts its own run
            self._tone_start, self._tone_hz, self._tone_frames = index, hz, 1

    def _track_speech(self, index: int, voiced: bool) -> None:
        if voiced:
            self._onset_run += 1
            if self._greeting_start is None and self._onset_run >= ONSET_FRAMES:
                self._greeting_start = index - ONSET_FRAMES + 1
                self._speech_ms = ONSET_FRAMES * FRAME_MS
            elif self._greeting_start is not None:
                self._speech_ms += FRAME_MS
            if self._greeting_start is not None:
                self._last_voiced = index
                self._silence_run = 0
            return
        self._onset_run = 0
        if self._greeting_start is not None:
            self._silence_run += 1

    def _forget_greeting(self) -> None:
        self._greeting_start = None
        self._speech_ms = 0
        self._silence_run = 0
        self._last_voiced = -1

    def _decide(self, index: int, events: list[AmdEvent]) -> None:
        c = self._c
        if self._greeting_start is not None:
            # The greeting's span so far, pauses shorter than a reply pause included: machines breathe too.
            span_ms = (self._last_voiced - self._greeting_start + 1) * FRAME_MS
            if span_ms >= c.machine_min_greeting_ms:
                self._set_verdict("machine", index, "long_greeting", events)
                return
            # A tone under way is no pause for a reply: it may be the beep, known only at its end.
            if self._silence_run * FRAME_MS >= c.reply_pause_ms and not self._tone_frames:
                if self._speech_ms < MIN_WORD_MS:
                    self._forget_greeting()  # a click or a burst of line noise, not a word
                    return
                # A pause for a reply: a short greeting is a person; a middling one too, since a machine
                # rarely pauses that long before its greeting is done.
                kind: AnsweredBy = "human" if span_ms <= c.human_max_greeting_ms else "unknown"
                self._set_verdict(kind, index, "short_greeting" if kind == "human" else "pause", events)
                return
        if (index + 1) * FRAME_MS >= c.decision_timeout_s * 1000:
            # Still talking at the timeout, past a person's greeting and with no pause for a reply yet:
            # nobody waiting to be answered talks like that (a greeting that began late, or is slow).
            talking = self._greeting_start is not None and self._silence_run * FRAME_MS < c.reply_pause_ms
            span_ms = (self._last_voiced - (self._greeting_start or 0) + 1) * FRAME_MS
            if talking and span_ms > c.human_max_greeting_ms:
                self._set_verdict("machine", index, "no_pause", events)
            else:
                self._set_verdict("unknown", index, "timeout", events)

    def _set_verdict(self, kind: AnsweredBy, index: int, reason: str, events: list[AmdEvent]) -> None:
        self.verdict = AmdVerdict(kind, self._seconds(index + 1), reason)
        self._verdict_frame = index + 1
        events.append(self.verdict)

    def _wait_for_cue(self, index: int, events: list[AmdEvent]) -> None:
        """After `machine`: the greeting's end and a silence (no beep came), or the cap."""
        if self._tone_frames:
            return  # a tone under way may be the beep: wait for its end
        c = self._c
        silent_ms = self._silence_run * FRAME_MS if self._greeting_start is not None else 0
        if silent_ms >= c.message_after_silence_ms:
            self.cue = MessageCue(self._seconds(index + 1), "silence")
        elif (index + 1 - self._verdict_frame) * FRAME_MS >= c.max_wait_for_beep_s * 1000:
            self.cue = MessageCue(self._seconds(index + 1), "cap")
        if self.cue is not None:
            events.append(self.cue)
