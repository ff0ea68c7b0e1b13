"""Preflight checks behind `voicebridge doctor`: each one passes, warns or fails with a one-line fix.

Every check is a plain function returning a `Check`, kept by topic in `config`, `network`, `speech` and
`host`; `run_checks` runs them in order, turns any unexpected exception into a FAIL row (so the command
never prints a traceback) and masks every configured secret in what it hands back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, SecretStr

from voicebridge.config.schema import Settings
from voicebridge.doctor.config import check_authentication, check_config, check_public_url
from voicebridge.doctor.host import check_control_socket, check_open_files, check_state_dir
from voicebridge.doctor.languages import check_languages
from voicebridge.doctor.network import check_backend, check_port
from voicebridge.doctor.report import Check, error_text, one_line
from voicebridge.doctor.speech import check_cpu, check_remote_stt, check_stt, check_tts

# Secrets shorter than this are not masked in the output: replacing one or two characters everywhere
# would garble every row, and no real key is that short.
MIN_MASKED_SECRET = 4


def _guard(name: str, run: Callable[[], Check]) -> Check:
    try:
        return run()
    except Exception as exc:  # any surprise is one FAIL row, never a traceback
        detail = f"unexpected error: {type(exc).__name__}: {error_text(exc)}"
        return Check(name, "fail", detail, "report this with the detail above")


def _secrets(settings: Settings) -> list[str]:
    # [numbers] is a table of numbers, not a section, and holds no secrets.
    sections = [part for _, part in settings if isinstance(part, BaseModel)]
    values = {
        value.get_secret_value() for part in sections for _, value in part if isinstance(value, SecretStr)
    }
    return sorted((value for value in values if len(value) >= MIN_MASKED_SECRET), key=len, reverse=True)


def _masked(check: Check, secrets: list[str]) -> Check:
    # Engines already mask keys in their errors; this is the net under every row, including surprises.
    detail, fix = one_line(check.detail), one_line(check.fix)
    for secret in secrets:
        detail, fix = detail.replace(secret, "********"), fix.replace(secret, "********")
    return check._replace(detail=detail, fix=fix)


def run_checks(config_path: Path | None, progress: Callable[[str], None] | None = None) -> list[Check]:
    """Run every check in order (only the config check when the config is invalid)."""
    report = progress or (lambda _name: None)
    report("config")
    config, settings = check_config(config_path)
    if settings is None:
        return [_masked(config, [])]
    stt_seconds: float | None = None

    def stt() -> Check:
        nonlocal stt_seconds
        check, stt_seconds = check_stt(settings)
        return check

    steps: list[tuple[str, Callable[[], Check]]] = [
        ("listen port", lambda: check_port(settings)),
        ("public url", lambda: check_public_url(settings)),
        ("authentication", lambda: check_authentication(settings)),
        ("stt", stt),
        ("remote stt", lambda: check_remote_stt(settings)),
        ("languages", lambda: check_languages(settings)),
        ("tts", lambda: check_tts(settings)),
        ("backend", lambda: check_backend(settings)),
        ("control socket", lambda: check_control_socket(settings)),
        ("state dir", lambda: check_state_dir(settings)),
        ("open files", lambda: check_open_files(settings)),
        ("cpu", lambda: check_cpu(settings, stt_seconds)),
    ]
    checks = [config]
    for name, run in steps:
        report(name)
        checks.append(_guard(name, run))
    secrets = _secrets(settings)
    return [_masked(check, secrets) for check in checks]


def all_ok(checks: list[Check]) -> bool:
    """True when no check failed (warnings are allowed)."""
    return all(check.status != "fail" for check in checks)
