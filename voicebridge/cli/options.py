"""Options more than one command takes, declared once: where the config is, where the daemon's control
socket is, and the `--json` switch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def config_option(used_for: str = "") -> Any:
    """The `--config` option; `used_for` says what a command reads from it (e.g. "the socket path")."""
    purpose = f"for {used_for}; " if used_for else ""
    return typer.Option(
        "--config", "-c", help=f"TOML config file ({purpose}else $VOICEBRIDGE_CONFIG, ./voicebridge.toml, …)."
    )


ConfigOption = Annotated[Path | None, config_option()]
# The control commands (`calls`, `outbox`) read only control.socket_path from it.
SocketConfigOption = Annotated[Path | None, config_option("the socket path")]
SocketOption = Annotated[
    Path | None, typer.Option("--socket", help="Control socket path (overrides control.socket_path).")
]


def json_option(holds: str = "", instead_of: str = "a table") -> Any:
    """The `--json` switch; `holds` names the document's fields for the help line (else: "instead of"
    `instead_of`, what the command prints without it)."""
    return typer.Option(
        "--json", help=f"Print JSON: {holds}." if holds else f"Print JSON instead of {instead_of}."
    )
