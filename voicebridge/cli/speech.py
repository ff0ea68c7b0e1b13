"""`voicebridge tts` and `voicebridge stt`: the configured speech engines on files, outside any call."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from voicebridge.cli.errors import CliError
from voicebridge.cli.options import ConfigOption, json_option
from voicebridge.config.load import load_settings


def tts(
    text: Annotated[str, typer.Argument(help="What to say.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="WAV file to write.")],
    engine: Annotated[str | None, typer.Option(help="piper or azure (default: tts.engine).")] = None,
    rate: Annotated[int, typer.Option(help="Output sample rate: 8000, 16000 or 24000.")] = 8000,
    config: ConfigOption = None,
) -> None:
    """Synthesise TEXT to a WAV file at a phone-line sample rate."""
    from voicebridge.audio.wav import write_wav
    from voicebridge.speech.factory import build_tts
    from voicebridge.speech.models import ModelCache

    if engine not in (None, "piper", "azure"):
        raise CliError(f"unknown TTS engine {engine!r} (choose piper or azure)")
    if rate not in (8000, 16000, 24000):
        raise CliError(f"unsupported rate {rate} (choose 8000, 16000 or 24000)")
    if not text.strip():
        raise CliError("nothing to say: TEXT is empty")
    settings = load_settings(config)
    console = Console(stderr=True)
    with console.status(f"Loading {engine or settings.tts.engine} voice…"):
        engine_impl = build_tts(settings, ModelCache(), engine)

    async def collect() -> tuple[bytes, float]:
        started = time.perf_counter()
        first_audio = 0.0
        pieces: list[bytes] = []
        async for piece in engine_impl.synthesize(text, rate):
            first_audio = first_audio or time.perf_counter() - started
            pieces.append(piece)
        return b"".join(pieces), first_audio

    with console.status("Synthesising…"):
        started = time.perf_counter()
        pcm, first_audio = asyncio.run(collect())
        elapsed = time.perf_counter() - started
    try:
        write_wav(output, pcm, rate)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    seconds = len(pcm) / 2 / rate
    console.print(
        f"wrote {output} — {seconds:.2f} s at {rate} Hz "
        f"(first audio {first_audio * 1000:.0f} ms, total {elapsed * 1000:.0f} ms, {engine_impl.name})"
    )


def stt(
    file: Annotated[Path, typer.Argument(help="WAV file to transcribe (any common rate/width/channels).")],
    as_json: Annotated[bool, json_option("text, seconds, engine")] = False,
    config: ConfigOption = None,
) -> None:
    """Transcribe a WAV file with the configured local STT engine."""
    from voicebridge.audio.wav import read_wav
    from voicebridge.speech.factory import build_stt
    from voicebridge.speech.models import ModelCache

    settings = load_settings(config)
    pcm, sample_rate = read_wav(file)
    console = Console(stderr=True)
    with console.status("Loading speech model…"):
        engine = build_stt(settings, ModelCache())
    with console.status("Transcribing…"):
        transcript = asyncio.run(engine.transcribe(pcm, sample_rate))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "text": transcript.text,
                    "audio_seconds": round(transcript.audio_seconds, 3),
                    "processing_seconds": round(transcript.processing_seconds, 3),
                    "engine": transcript.engine,
                }
            )
        )
    else:
        typer.echo(transcript.text)
