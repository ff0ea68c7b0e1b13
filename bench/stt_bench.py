"""STT seconds per utterance (p50/p95) and word error rate over the 8 kHz μ-law phone path.

Not a test: prints figures. Utterances are 2-4 s Piper sentences. `--compare` also runs the same set
through faster-whisper's plain 30 s-window `transcribe()`, to measure what the 10 s window trades.

    python bench/stt_bench.py [--compare] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicebridge.audio.codecs import pcm16_to_float32, pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.audio.resample import resample_once
from voicebridge.config import Settings
from voicebridge.speech.models import ModelCache, default_whisper_path
from voicebridge.speech.stt import WhisperSTT
from voicebridge.speech.tts.piper import PiperTTS
from voicebridge.speech.wer import normalise_words, word_error_rate

SENTENCES = [
    "I would like to book an appointment for tomorrow morning, please.",
    "What time does the clinic open on Saturday and Sunday?",
    "Can I speak to someone about the charges on my last bill?",
    "My order has not arrived yet and it has been two weeks.",
    "Please cancel my booking for next week and refund the deposit.",
    "Do you deliver to Bangalore, or only within Mumbai?",
    "I need to change the phone number on my account.",
    "Is the doctor available this evening after six o'clock?",
    "How much does the annual plan cost compared to the monthly one?",
    "Thank you very much, that is all I needed for today.",
    "Can you send me the receipt for my payment by email?",
    "I forgot my account password and cannot log in.",
    "The parcel was left at the wrong address yesterday afternoon.",
    "Could you read that reference number again, slowly this time?",
]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def aggregate_wer(pairs: list[tuple[str, str]]) -> float:
    words = sum(len(normalise_words(ref)) for ref, _ in pairs)
    return sum(word_error_rate(ref, hyp) * len(normalise_words(ref)) for ref, hyp in pairs) / words


def report(name: str, seconds: list[float], pairs: list[tuple[str, str]]) -> None:
    print(
        f"{name:26s} p50 {statistics.median(seconds) * 1000:5.0f} ms  "
        f"p95 {percentile(seconds, 0.95) * 1000:5.0f} ms"
        f"  WER {aggregate_wer(pairs) * 100:4.1f}%  (n={len(seconds)})"
    )


async def main(compare: bool, rounds: int) -> None:
    cache = ModelCache()
    tts = PiperTTS(Settings().tts, cache)
    audio = []
    for text in SENTENCES:
        pcm = b"".join([piece async for piece in tts.synthesize(text, 8000)])
        audio.append((text, ulaw_to_pcm16(pcm16_to_ulaw(pcm))))
    lengths = [len(pcm) / 2 / 8000 for _, pcm in audio]
    print(
        f"{len(audio)} utterances, {min(lengths):.1f}-{max(lengths):.1f} s, 8 kHz μ-law round trip, 2 cores"
    )

    engine = WhisperSTT(Settings().stt, cache)
    await engine.transcribe(audio[0][1], 8000)  # warm-up
    seconds, pairs = [], []
    for _ in range(rounds):
        for text, pcm in audio:
            transcript = await engine.transcribe(pcm, 8000)
            seconds.append(transcript.processing_seconds)
            pairs.append((text, transcript.text))
    report(f"voicebridge ({Settings().stt.window_seconds:.0f} s window)", seconds, pairs)
    for reference, hypothesis in pairs[: len(audio)]:
        if word_error_rate(reference, hypothesis) > 0:
            print(f"    {reference!r} -> {hypothesis!r}")

    if compare:
        # The same cached model, driven through faster-whisper's default (30 s window) path.
        config = Settings().stt
        whisper = cache.whisper(default_whisper_path(), config.threads, config.workers)
        seconds, pairs = [], []
        for _ in range(rounds):
            for text, pcm in audio:
                started = time.perf_counter()
                samples = pcm16_to_float32(resample_once(pcm, 8000, 16000))
                segments, _ = whisper.transcribe(samples, beam_size=1, language="en", without_timestamps=True)
                hypothesis = " ".join(segment.text for segment in segments).strip()
                seconds.append(time.perf_counter() - started)
                pairs.append((text, hypothesis))
        report("faster-whisper 30 s", seconds, pairs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compare", action="store_true", help="also run the plain 30 s-window path")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.compare, args.rounds))
