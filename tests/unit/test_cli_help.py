"""The shared CLI options keep each command's own help context (declared once in cli/options.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from voicebridge.cli.app import app


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["calls", "list"], "for the socket path"),
        (["outbox", "list"], "for the socket path"),
        (["simulate"], "for the URL"),
        (["simulate"], "Print JSON instead of tables."),
        (["calls", "list"], "Print JSON instead of a table."),
        (["doctor"], "$VOICEBRIDGE_CONFIG"),
    ],
)
def test_help_says_what_the_shared_options_are_for(command: list[str], expected: str) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert expected in " ".join(result.output.split()), result.output
