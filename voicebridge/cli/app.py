"""The `voicebridge` command: serve, tts, stt and config (typer + rich)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from voicebridge import __version__
from voicebridge.cli.calls import calls_app
from voicebridge.cli.doctor import doctor
from voicebridge.cli.errors import CliError
from voicebridge.cli.outbox import outbox_app
from voicebridge.cli.simulate import simulate
from voicebridge.config.schema import (
    ConfigError,
    Settings,
    apply_overrides,
    load_settings,
    render_toml,
    resolve_config_path,
    write_starter,
)

app = typer.Typer(
    help="Telephony voice-bot bridge: phone calls ⇄ local speech recognition, an AI backend and TTS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Create and inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(calls_app, name="calls")
app.add_typer(outbox_app, name="outbox")
app.command("simulate")(simulate)
app.command("doctor")(doctor)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML config file (else $VOICEBRIDGE_CONFIG, ./voicebridge.toml, …)."
    ),
]


def _stderr() -> Console:
    return Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"voicebridge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """voicebridge — answer phone calls with local speech recognition and synthesis."""


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (overrides server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (overrides server.port).")] = None,
) -> None:
    """Run the daemon: webhooks, the audio WebSocket, health probes and metrics."""
    from voicebridge.server.serve import run_daemon

    settings = apply_overrides(load_settings(config), "server", host=host, port=port)
    raise typer.Exit(run_daemon(settings, config_path=resolve_config_path(config)))


@app.command()
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
    console = _stderr()
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


@app.command()
def stt(
    file: Annotated[Path, typer.Argument(help="WAV file to transcribe (any common rate/width/channels).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: text, seconds, engine.")] = False,
    config: ConfigOption = None,
) -> None:
    """Transcribe a WAV file with the configured local STT engine."""
    from voicebridge.audio.wav import read_wav
    from voicebridge.speech.factory import build_stt
    from voicebridge.speech.models import ModelCache

    settings = load_settings(config)
    pcm, sample_rate = read_wav(file)
    console = _stderr()
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


@config_app.command("init")
def config_init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path(
        "voicebridge.toml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a starter config with every key at its default."""
    write_starter(path, force=force)
    _stderr().print(f"wrote {path}")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration as TOML, secrets redacted."""
    settings: Settings = load_settings(config)
    source = resolve_config_path(config)
    typer.echo(
        f"# effective configuration (file: {source or 'none, built-in defaults'}; env overrides applied)"
    )
    typer.echo(render_toml(settings), nl=False)


def main() -> None:
    """Console entry point: run the app and turn known failures into one line and exit code 2."""
    from voicebridge.audio.wav import AudioFileError
    from voicebridge.backends.base import BackendError
    from voicebridge.speech.base import SpeechEngineError

    try:
        app()
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(2)
    except CliError as exc:
        typer.echo(f"voicebridge: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (AudioFileError, SpeechEngineError, BackendError) as exc:
        typer.echo(f"voicebridge: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
