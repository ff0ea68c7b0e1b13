"""Records survive: XDG state dir, the outbox's retry rule, parked records, per-session keys, passthru reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicebridge.config import Settings


def test_state_dir_follows_xdg_state_home_and_ignores_a_relative_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert Settings().state_path() == tmp_path / "xdg-state" / "voicebridge"
    # The spec: a relative path in an XDG variable is invalid and must be ignored.
    for ignored in ("relative/state", ""):
        monkeypatch.setenv("XDG_STATE_HOME", ignored)
        assert Settings().state_path() == tmp_path / "home" / ".local" / "state" / "voicebridge"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert Settings().state_path() == tmp_path / "home" / ".local" / "state" / "voicebridge"
    # systemd's StateDirectory= and the config still come first.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/voicebridge")
    assert Settings().state_path() == Path("/var/lib/voicebridge")
    configured = Settings.model_validate({"server": {"state_dir": str(tmp_path / "mine")}})
    assert configured.state_path() == tmp_path / "mine"
