"""The `voicebridge` command: the typer app, assembled from one module per command group."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from voicebridge import __version__
from voicebridge.cli.calls import calls_app
from voicebridge.cli.campaign import campaign_app
from voicebridge.cli.config import config_app
from voicebridge.cli.dial import dial
from voicebridge.cli.doctor import doctor
from voicebridge.cli.errors import CliError
from voicebridge.cli.outbox import outbox_app
from voicebridge.cli.serve import serve
from voicebridge.cli.simulate import simulate
from voicebridge.cli.speech import stt, tts
from voicebridge.config.load import ConfigError

app = typer.Typer(
    help="Telephony voice-bot bridge: phone calls ⇄ local speech recognition, an AI backend and TTS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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


# `voicebridge --help` lists the commands in this order, then the groups in theirs.
app.command("simulate")(simulate)
app.command("doctor")(doctor)
app.command("serve")(serve)
app.command("dial")(dial)
app.command("tts")(tts)
app.command("stt")(stt)
app.add_typer(config_app, name="config")
app.add_typer(calls_app, name="calls")
app.add_typer(outbox_app, name="outbox")
app.add_typer(campaign_app, name="campaign")


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
