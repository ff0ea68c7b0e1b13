"""The answering-machine detector on synthetic audio: voice-like harmonic bursts, silences, tones, noise."""

from __future__ import annotations

import numpy as np
import pytest

from voicebridge.audio.answering_machine import (
    AmdVerdict,
    AnsweringMachineDetector,
    BeepHeard,
    MessageCue,
)
from voicebridge.call.answering import twilio_answered_by
from voicebridge.config.amd import AmdConfig

RATE = 8000


def voice(seconds: float, rate: int = RATE, pitch: float = 140.0) -> np.ndarray:
    """Voiced-sounding audio (a harmonic series with a syllable-rate swell), as the engine tests use."""
    t = np.arange(int(rate * seconds)) / rate
    wave = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 20) if pitch * k < rate / 2)
    return wave * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) * 6000


def quiet(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(rate * seconds))


def tone(seconds: float, hz: float, rate: int = RATE) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate) * 8000


def pcm(*parts: np.ndarray) -> bytes:
    return np.clip(np.concatenate(parts), -32768, 32767).astype("<i2").tobytes()


def run(audio: bytes, rate: int = RATE, **config: object) -> tuple[AnsweringMachineDetector, list[object]]:
    detector = AnsweringMachineDetector(AmdConfig(**config), rate)  # type: ignore[arg-type]
    events: list[object] = []
    step = rate // 50 * 2 * 3  # 60 ms slices: frames straddle slice boundaries
    for offset in range(0, len(audio), step):
        events += detector.feed(audio[offset : offset + step])
    return detector, events


@pytest.mark.parametrize("rate", [8000, 16000])
def test_a_short_hello_then_a_pause_is_a_human(rate: int) -> None:
    detector, _ = run(pcm(quiet(0.4, rate), voice(0.7, rate), quiet(3, rate)), rate)
    assert detector.verdict is not None
    assert detector.verdict.answered_by == "human"
    # Decided once the pause for a reply has lasted reply_pause_ms, not at the timeout.
    assert 1.8 <= detector.verdict.at_s <= 2.0
    assert detector.done


def test_a_long_greeting_with_short_gaps_is_a_machine_at_its_threshold() -> None:
    sentences = [part for _ in range(4) for part in (voice(1.4), quiet(0.35))]
    _, events = run(pcm(quiet(0.3), *sentences, quiet(3)))
    verdict = next(e for e in events if isinstance(e, AmdVerdict))
    assert verdict.answered_by == "machine" and verdict.reason == "long_greeting"
    assert 3.2 <= verdict.at_s <= 3.4
    # No beep came: the message waits for the greeting's end and message_after_silence_ms.
    cue = next(e for e in events if isinstance(e, MessageCue))
    assert cue.reason == "silence"
    greeting_end = 0.3 + 4 * 1.75 - 0.35
    assert cue.at_s == pytest.approx(greeting_end + 1.5, abs=0.1)


@pytest.mark.parametrize("hz", [440.0, 1000.0, 1400.0, 2000.0])
def test_the_beep_after_a_greeting_cues_the_message_at_its_end(hz: float) -> None:
    _, events = run(pcm(voice(3.5), quiet(0.3), tone(0.5, hz), quiet(2)))
    beep = next(e for e in events if isinstance(e, BeepHeard))
    assert beep.ended_s == pytest.approx(4.3, abs=0.04)
    assert beep.hz == pytest.approx(hz, abs=50)
    cue = next(e for e in events if isinstance(e, MessageCue))
    assert cue == MessageCue(beep.ended_s, "beep_end")


def test_a_beep_alone_is_a_machine() -> None:
    detector, _ = run(pcm(quiet(0.5), voice(1.0), quiet(0.2), tone(0.3, 1000), quiet(2)))
    assert detector.verdict is not None and detector.verdict.answered_by == "machine"
    assert detector.verdict.reason == "beep"
    assert detector.cue is not None and detector.cue.at_s == pytest.approx(2.0, abs=0.04)


def test_a_beep_with_line_noise_is_still_found() -> None:
    noise = np.random.default_rng(7).normal(0, 300, int(RATE * 6.1))
    audio = np.concatenate([voice(3.5), quiet(0.3), tone(0.4, 850), quiet(1.9)]) + noise
    _, events = run(pcm(audio))
    beep = next(e for e in events if isinstance(e, BeepHeard))
    assert beep.ended_s == pytest.approx(4.2, abs=0.04)


def test_silence_until_the_timeout_is_unknown() -> None:
    detector, _ = run(pcm(quiet(5)), decision_timeout_s=3.0)
    assert detector.verdict == AmdVerdict("unknown", 3.0, "timeout")


def test_a_middling_greeting_then_a_pause_is_unknown() -> None:
    detector, _ = run(pcm(voice(2.4), quiet(2)))
    assert detector.verdict is not None and detector.verdict.answered_by == "unknown"


def test_a_tone_too_short_is_no_beep() -> None:
    _, events = run(pcm(quiet(0.5), tone(0.06, 1000), quiet(3)))
    assert not any(isinstance(e, BeepHeard) for e in events)


def test_without_a_beep_the_cap_cues_the_message() -> None:
    detector, _ = run(pcm(voice(12)), max_wait_for_beep_s=2.0, machine_min_greeting_ms=3000)
    assert detector.cue is not None and detector.cue.reason == "cap"
    assert detector.cue.at_s == pytest.approx(3.0 + 2.0, abs=0.1)


def test_the_provider_verdict_overrides() -> None:
    detector = AnsweringMachineDetector(AmdConfig(), RATE)
    detector.feed(pcm(voice(0.5)))
    assert detector.override("machine").answered_by == "machine"
    assert not detector.done  # still listening for the beep to leave the message after


def test_rates_webrtcvad_cannot_take_are_refused() -> None:
    with pytest.raises(ValueError, match="8/16/32/48 kHz"):
        AnsweringMachineDetector(AmdConfig(), 24000)


@pytest.mark.parametrize(
    "values",
    [
        {"human_max_greeting_ms": 3000, "machine_min_greeting_ms": 3000},
        {"beep_min_hz": 2000.0, "beep_max_hz": 1000.0},
        {"decision_timeout_s": 0.1},
        {"on_machine": "shout"},
    ],
)
def test_config_bounds(values: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AmdConfig(**values)  # type: ignore[arg-type]


def test_still_talking_at_the_timeout_past_a_persons_greeting_is_a_machine() -> None:
    # The greeting began late: 2 s in, it has not reached machine_min_greeting_ms by the timeout.
    detector, _ = run(pcm(quiet(2.0), voice(4.0)))
    assert detector.verdict == AmdVerdict("machine", 4.0, "no_pause")


def test_a_tone_is_no_pause_for_a_reply() -> None:
    # A short greeting, then a long beep: the silence rule must not call it a person before the beep ends.
    detector, _ = run(pcm(voice(1.0), quiet(0.2), tone(1.0, 1000), quiet(2)))
    assert detector.verdict is not None and detector.verdict.reason == "beep"


def test_a_click_before_the_greeting_is_not_taken_for_a_short_hello() -> None:
    detector, _ = run(pcm(voice(0.1), quiet(1.0), voice(3.5), quiet(1)))
    assert detector.verdict is not None and detector.verdict.answered_by == "machine"


@pytest.mark.parametrize(
    ("twilio", "ours"),
    [
        ("human", "human"),
        ("machine_start", "machine"),
        ("machine_end_beep", "machine"),
        ("machine_end_silence", "machine"),
        ("machine_end_other", "machine"),
        ("fax", "machine"),
        ("unknown", "unknown"),
        ("", "unknown"),
        ("HUMAN<script>", "unknown"),
    ],
)
def test_twilio_answered_by_maps_onto_ours(twilio: str, ours: str) -> None:
    assert twilio_answered_by(twilio) == ours
