"""The error a command raises for the operator: `voicebridge.cli.app.main` prints it as one line."""

from __future__ import annotations


class CliError(Exception):
    """A user-facing failure: printed as one line; `exit_code` 2 for bad input, 1 for a failed operation."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
