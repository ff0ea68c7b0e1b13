"""What one preflight check reports, and the small text helpers every check uses for its one-line rows."""

from __future__ import annotations

from typing import Literal, NamedTuple

Status = Literal["pass", "warn", "fail"]


class Check(NamedTuple):
    """The outcome of one preflight check; `fix` says what to change when it is not a pass."""

    name: str
    # Any "fail" makes `voicebridge doctor` exit 1; a "warn" is shown but lets it pass.
    status: Status
    detail: str
    fix: str = ""


def one_line(text: str) -> str:
    return " ".join(text.split())


def error_text(exc: BaseException) -> str:
    return one_line(str(exc)) or type(exc).__name__
