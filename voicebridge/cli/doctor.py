"""`voicebridge doctor`: preflight checks as a table (or JSON); exit 1 when any check fails."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from voicebridge.cli.options import ConfigOption, json_option

_STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def doctor(
    config: ConfigOption = None,
    as_json: Annotated[bool, json_option("the checks (name, status, detail, fix) and ok")] = False,
) -> None:
    """Check the config, port, speech engines, backend, directories and limits before serving."""
    # Imported here so every other command starts without the doctor's imports.
    from voicebridge.doctor.checks import all_ok, run_checks

    if as_json:
        checks = run_checks(config)
        document = {
            "ok": all_ok(checks),
            "checks": [
                {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks
            ],
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        with Console(stderr=True).status("Checking config…") as spinner:
            checks = run_checks(config, progress=lambda name: spinner.update(f"Checking {name}…"))
        table = Table("status", "check", "detail", "fix", title="voicebridge doctor")
        for check in checks:
            # Text, not markup: details quote paths, URLs and transcripts that may contain brackets.
            table.add_row(
                Text(check.status.upper(), style=_STYLES[check.status]),
                Text(check.name),
                Text(check.detail),
                Text(check.fix),
            )
        console = Console()
        console.print(table)
        counts = {status: sum(c.status == status for c in checks) for status in _STYLES}
        console.print(f"{counts['pass']} passed, {counts['warn']} warned, {counts['fail']} failed")
    raise typer.Exit(0 if all_ok(checks) else 1)
