"""STT on real recorded speech: the short window against faster-whisper's 30 s window, over the phone path.

Piper round trips (bench/stt_bench.py) flatter any recogniser, so this runs human recordings with their
published transcripts, fetched from the package registries (the only network these machines have) and
cached: the pocketsphinx 5.1.1 sdist on PyPI (LibriVox readings, public domain; CMU test clips, BSD) and
the nodejs-whisper 0.3.1 npm package (whisper.cpp's jfk.wav, public domain, with its expected text).
Each clip goes 16 kHz → 8 kHz → μ-law → back, as a phone line would carry it.

    python bench/real_speech.py [--cache DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import subprocess
import sys
import tarfile
import wave
from pathlib import Path

from stt_bench import run_plain, run_voicebridge, summary

from voicebridge.audio.codecs import pcm16_to_ulaw, ulaw_to_pcm16
from voicebridge.audio.resample import resample_once
from voicebridge.config.schema import Settings
from voicebridge.speech.models import ModelCache
from voicebridge.speech.stt import WhisperSTT
from voicebridge.speech.wer import word_error_rate

POCKETSPHINX = "pocketsphinx-5.1.1"
NODEJS_WHISPER = "nodejs-whisper-0.3.1"
# Asserted as the decoding of goforward.raw in pocketsphinx's own tests (cython/test/decoder_test.py).
GOFORWARD_TEXT = "go forward ten meters"


def fetch(cache: Path) -> tuple[Path, Path]:
    """The two archives, downloaded once from PyPI and npm into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"{POCKETSPHINX}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"),
                *("pocketsphinx==5.1.1", "-d", str(cache)),
            ],
            check=True,
        )
    tgz = cache / f"{NODEJS_WHISPER}.tgz"
    if not tgz.exists():
        subprocess.run(["npm", "pack", "-q", "nodejs-whisper@0.3.1"], cwd=cache, check=True)
    return sdist, tgz


def _wav_pcm16k(data: bytes) -> bytes:
    with wave.open(io.BytesIO(data)) as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (16000, 1, 2):
            raise ValueError("expected 16 kHz mono 16-bit audio")
        return wav.readframes(wav.getnframes())


def clips(sdist: Path, tgz: Path) -> list[tuple[str, str, bytes]]:
    """(name, published transcript, 16 kHz PCM16) for every clip, transcripts read from the archives."""
    found: list[tuple[str, str, bytes]] = []
    with tarfile.open(sdist) as archive:

        def read(member: str) -> bytes:
            handle = archive.extractfile(f"{POCKETSPHINX}/test/data/{member}")
            assert handle is not None
            return handle.read()

        names = [m.name for m in archive.getmembers() if re.search(r"librivox/.*-\d+\.wav$", m.name)]
        for name in sorted(names):
            stem = name.removesuffix(".wav").split("/test/data/")[1]
            text = read(f"{stem}.txt").decode().strip()
            found.append((f"librivox {stem[-4:]}", text, _wav_pcm16k(read(f"{stem}.wav"))))
        for line in read("cards/cards.transcription").decode().splitlines():
            if match := re.match(r"<s>(.*)</s> \((\d+)\)", line.strip()):
                text, number = match.group(1).strip(), match.group(2)
                found.append((f"cards {number}", text, _wav_pcm16k(read(f"cards/{number}.wav"))))
        found.append(("goforward", GOFORWARD_TEXT, read("goforward.raw")))
    with tarfile.open(tgz) as archive:
        root = "package/cpp/whisper.cpp"
        text_file = archive.extractfile(f"{root}/tests/parakeet-expected-jfk-output.txt")
        wav_file = archive.extractfile(f"{root}/bindings/go/samples/jfk.wav")
        assert text_file is not None and wav_file is not None
        found.append(("jfk", text_file.read().decode().strip(), _wav_pcm16k(wav_file.read())))
    return found


def phone_line(pcm16k: bytes) -> bytes:
    """What reaches the daemon: 8 kHz, μ-law encoded and decoded."""
    return ulaw_to_pcm16(pcm16_to_ulaw(resample_once(pcm16k, 16000, 8000)))


async def main(cache: Path, rounds: int) -> None:
    sdist, tgz = fetch(cache)
    recorded = clips(sdist, tgz)
    names = [name for name, _, _ in recorded]
    audio = [(text, phone_line(pcm)) for _, text, pcm in recorded]
    words = sum(len(text.split()) for text, _ in audio)
    print(f"{len(audio)} real clips, {words} words, 8 kHz μ-law round trip, {rounds} rounds")
    models = ModelCache()
    engine = WhisperSTT(Settings().stt, models)
    await engine.transcribe(audio[0][1], 8000)
    window = [await run_voicebridge(engine, audio) for _ in range(rounds)]
    run_plain(models, audio[:1])
    plain = [run_plain(models, audio) for _ in range(rounds)]
    for i, (reference, pcm) in enumerate(audio):
        short, full = window[0][1][i], plain[0][1][i]
        print(
            f"{names[i]:14s} {len(pcm) / 16000:4.1f}s  window WER {word_error_rate(reference, short):4.0%} "
            f"| 30 s WER {word_error_rate(reference, full):4.0%}  {short[:60]}"
        )

    def flatten(runs: list[tuple[list[float], list[str]]]) -> tuple[list[float], list[tuple[str, str]]]:
        seconds = [s for run in runs for s in run[0]]
        pairs = [(ref, hyp) for run in runs for (ref, _), hyp in zip(audio, run[1], strict=True)]
        return seconds, pairs

    print(summary(f"voicebridge {Settings().stt.window_seconds:g} s window", *flatten(window)))
    print(summary("faster-whisper 30 s", *flatten(plain)))
    engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "voicebridge-bench")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.cache, max(1, args.rounds)))
