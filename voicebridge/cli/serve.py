"""`voicebridge serve`: parse the options, then hand over to the daemon (voicebridge.server)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voicebridge.cli.options import ConfigOption
from voicebridge.config.load import load_config, resolve_config_path, warn_retired
from voicebridge.config.schema import Settings


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (overrides server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (overrides server.port).")] = None,
) -> None:
    """Run the daemon: webhooks, the audio WebSocket, health probes and metrics."""
    # Imported here so every other command starts without the server's imports.
    from voicebridge.server.serve import run_daemon

    settings = daemon_settings(config, host, port)
    raise typer.Exit(run_daemon(settings, config_path=resolve_config_path(config)))


def daemon_settings(config: Path | None, host: str | None = None, port: int | None = None) -> Settings:
    """The daemon's settings, with logging configured from them and a warning logged per retired key."""
    from voicebridge.server.logs import configure_logging

    # The options go through the same validation as the file: `--host 0.0.0.0` with every webhook on
    # `none` is refused like `host = "0.0.0.0"` in the file (model_copy would skip that check).
    server = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    loaded = load_config(config, {"server": server} if server else None)
    settings = loaded.settings
    # Logging first, so each retired key's warning is a line in the daemon's own log format.
    configure_logging(settings.logging)
    warn_retired(loaded.retired)
    return settings
