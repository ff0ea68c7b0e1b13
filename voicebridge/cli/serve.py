"""`voicebridge serve`: parse the options, then hand over to the daemon (voicebridge.server)."""

from __future__ import annotations

from typing import Annotated

import typer

from voicebridge.cli.options import ConfigOption
from voicebridge.config.load import apply_overrides, load_settings, resolve_config_path


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (overrides server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (overrides server.port).")] = None,
) -> None:
    """Run the daemon: webhooks, the audio WebSocket, health probes and metrics."""
    # Imported here so every other command starts without the server's imports.
    from voicebridge.server.serve import run_daemon

    settings = apply_overrides(load_settings(config), "server", host=host, port=port)
    raise typer.Exit(run_daemon(settings, config_path=resolve_config_path(config)))
