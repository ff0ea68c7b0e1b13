"""Options more than one command takes, declared once: where the config is, where the daemon's control
socket is, and the `--json` switch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML config file (else $VOICEBRIDGE_CONFIG, ./voicebridge.toml, …)."
    ),
]
SocketOption = Annotated[
    Path | None, typer.Option("--socket", help="Control socket path (overrides control.socket_path).")
]


def json_option(holds: str = "") -> Any:
    """The `--json` switch; `holds` names the document's fields for the help line (else: "instead of a
    table")."""
    return typer.Option("--json", help=f"Print JSON: {holds}." if holds else "Print JSON instead of a table.")
