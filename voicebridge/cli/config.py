"""`voicebridge config init|show`: write a starter config, print the effective one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from voicebridge.cli.options import ConfigOption
from voicebridge.config.load import load_settings, render_toml, resolve_config_path, write_starter

config_app = typer.Typer(help="Create and inspect the configuration.", no_args_is_help=True)


@config_app.command("init")
def config_init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path(
        "voicebridge.toml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a starter config with every key at its default."""
    write_starter(path, force=force)
    Console(stderr=True).print(f"wrote {path}")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration as TOML, secrets redacted."""
    settings = load_settings(config)
    source = resolve_config_path(config)
    typer.echo(
        f"# effective configuration (file: {source or 'none, built-in defaults'}; env overrides applied)"
    )
    typer.echo(render_toml(settings), nl=False)
