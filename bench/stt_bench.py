"""STT seconds per utterance (p50/p95) and word error rate over the 8 kHz μ-law phone path.

Not a test: prints figures. The utterances are 2-4 s Piper sentences (Piper adds a little randomness, so
figures move a little between runs). `--compare` also runs the same audio through faster-whisper's plain
30 s-window `transcribe()` on the same shared model, to measure what the short window trades.

    python bench/stt_bench.py [--compare] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from voicebridge.audio.codecs import pcm16_to_float32, pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.audio.resample import resample_once
from voicebridge.config.schema import Settings
from voicebridge.speech.models import ModelCache, default_whisper_path
from voicebridge.speech.stt import WhisperSTT, clean_text, usable_cores, worker_count
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
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def aggregate_wer(pairs: list[tuple[str, str]]) -> float:
    """Word errors over all utterances / reference words over all utterances."""
    words = sum(len(normalise_words(reference)) for reference, _ in pairs)
    errors = sum(word_error_rate(ref, hyp) * len(normalise_words(ref)) for ref, hyp in pairs)
    return errors / words


async def synthesise(cache: ModelCache) -> list[tuple[str, bytes]]:
    """Each sentence from Piper at 8 kHz, through a μ-law encode and decode (the phone line)."""
    tts = PiperTTS(Settings().tts, cache)
    audio = []
    for text in SENTENCES:
        pcm = b"".join([piece async for piece in tts.synthesize(text, 8000)])
        audio.append((text, ulaw_to_pcm16(pcm16_to_ulaw(pcm))))
    tts.close()
    return audio


async def run_voicebridge(
    engine: WhisperSTT, audio: list[tuple[str, bytes]]
) -> tuple[list[float], list[str]]:
    """Sequential calls through WhisperSTT: processing seconds and text per utterance."""
    seconds, texts = [], []
    for _text, pcm in audio:
        transcript = await engine.transcribe(pcm, 8000)
        seconds.append(transcript.processing_seconds)
        texts.append(transcript.text)
    return seconds, texts


def run_plain(cache: ModelCache, audio: list[tuple[str, bytes]]) -> tuple[list[float], list[str]]:
    """The same audio through faster-whisper's own transcribe(): every utterance padded to 30 s."""
    config = Settings().stt
    workers = worker_count(config, usable_cores())
    model = cache.whisper(config.model_path or default_whisper_path(), config.threads, workers)
    seconds, texts = [], []
    for _text, pcm in audio:
        started = time.perf_counter()
        samples = pcm16_to_float32(resample_once(pcm, 8000, 16000))
        segments, _ = model.transcribe(
            samples, beam_size=config.beam_size, condition_on_previous_text=False, without_timestamps=True
        )
        texts.append(clean_text(" ".join(segment.text for segment in segments)))
        seconds.append(time.perf_counter() - started)
    return seconds, texts


def summary(name: str, seconds: list[float], pairs: list[tuple[str, str]]) -> str:
    return (
        f"{name:24s} p50 {statistics.median(seconds):5.3f} s  p95 {percentile(seconds, 0.95):5.3f} s  "
        f"WER {aggregate_wer(pairs) * 100:4.1f}%  (n={len(seconds)})"
    )


async def main(compare: bool, rounds: int) -> None:
    cache = ModelCache()
    audio = await synthesise(cache)
    lengths = [len(pcm) / 2 / 8000 for _, pcm in audio]
    config = Settings().stt
    print(
        f"{len(audio)} utterances of {min(lengths):.1f}-{max(lengths):.1f} s, 8 kHz μ-law round trip, "
        f"Whisper tiny.en int8, beam {config.beam_size}, {worker_count(config, usable_cores())} workers x "
        f"{config.threads} thread, "
        f"{rounds} rounds"
    )
    engine = WhisperSTT(config, cache)
    await engine.transcribe(audio[0][1], 8000)  # warm-up: first-call allocations are not the steady state
    window: list[tuple[list[float], list[str]]] = [
        await run_voicebridge(engine, audio) for _ in range(rounds)
    ]
    plain: list[tuple[list[float], list[str]]] = []
    if compare:
        run_plain(cache, audio[:1])
        plain = [run_plain(cache, audio) for _ in range(rounds)]

    header = f"{'#':>2} {'audio':>6} {'window':>7}" + (f" {'30 s':>7}" if compare else "") + "  text (window)"
    print(header)
    for i, (reference, _pcm) in enumerate(audio):
        cells = f"{i + 1:2d} {lengths[i]:5.1f}s {statistics.median(r[0][i] for r in window):6.3f}s"
        if compare:
            cells += f" {statistics.median(r[0][i] for r in plain):6.3f}s"
        hypothesis = window[0][1][i]
        mark = "  " if word_error_rate(reference, hypothesis) == 0 else "✗ "
        print(f"{cells}  {mark}{hypothesis[:70]}")

    def flatten(runs: list[tuple[list[float], list[str]]]) -> tuple[list[float], list[tuple[str, str]]]:
        seconds = [s for run in runs for s in run[0]]
        pairs = [(ref, hyp) for run in runs for (ref, _), hyp in zip(audio, run[1], strict=True)]
        return seconds, pairs

    print(summary(f"voicebridge {config.window_seconds:g} s window", *flatten(window)))
    if compare:
        print(summary("faster-whisper 30 s", *flatten(plain)))

    # Everything at once, as when many callers finish speaking together: bounded by `workers`.
    started = time.perf_counter()
    burst = await asyncio.gather(*(engine.transcribe(pcm, 8000) for _, pcm in audio))
    wall = time.perf_counter() - started
    latencies = [t.processing_seconds for t in burst]
    print(
        f"burst of {len(audio)} at once       {len(audio) / wall:4.1f} utterances/s, "
        f"latency p50 {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s"
    )
    engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compare", action="store_true", help="also run faster-whisper's plain 30 s path")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the utterances (default 3)")
    args = parser.parse_args()
    asyncio.run(main(args.compare, max(1, args.rounds)))
