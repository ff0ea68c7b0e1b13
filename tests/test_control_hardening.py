"""The control socket: a private directory, and one JSON reply for every line whatever it holds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from voicebridge.config import Settings


def test_control_socket_follows_an_absolute_xdg_runtime_dir_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert Settings().control_socket_path() == tmp_path / "run" / "voicebridge" / "control.sock"
    fallback = Path(tempfile.gettempdir()) / f"voicebridge-{__import__('os').getuid()}"
    for ignored in ("run/user/1000", ""):
        monkeypatch.setenv("XDG_RUNTIME_DIR", ignored)
        assert Settings().control_socket_path() == fallback / "voicebridge" / "control.sock"
