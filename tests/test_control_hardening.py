"""The control socket: a private directory, and one JSON reply for every line whatever it holds."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import tomli_w

from voicebridge.config import Settings
from voicebridge.daemon.child import free_port
from voicebridge.daemon.control import ControlServer, ControlSocketError
from voicebridge.daemon.registry import CallRegistry


def test_control_socket_follows_an_absolute_xdg_runtime_dir_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert Settings().control_socket_path() == tmp_path / "run" / "voicebridge" / "control.sock"
    fallback = Path(tempfile.gettempdir()) / f"voicebridge-{os.getuid()}"
    for ignored in ("run/user/1000", ""):
        monkeypatch.setenv("XDG_RUNTIME_DIR", ignored)
        assert Settings().control_socket_path() == fallback / "voicebridge" / "control.sock"


def fallback_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ControlServer:
    """A control server on the default path with no runtime dir: the private fallback under $TMPDIR."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = Settings().control_socket_path()
    assert path == tmp_path / f"voicebridge-{os.getuid()}" / "voicebridge" / "control.sock"
    return ControlServer(CallRegistry(4), path, dict)


async def test_the_fallback_directory_is_created_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fallback_server(tmp_path, monkeypatch)
    await server.start()
    try:
        private = tmp_path / f"voicebridge-{os.getuid()}"
        assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.stat().st_uid == os.geteuid()
        assert server.path.is_socket()
    finally:
        await server.close()


@pytest.mark.parametrize("attack", ["world_writable", "group_writable", "not_ours", "symlink"])
async def test_a_fallback_directory_someone_else_could_control_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    server = fallback_server(tmp_path, monkeypatch)
    private = tmp_path / f"voicebridge-{os.getuid()}"
    if attack == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        private.symlink_to(tmp_path / "elsewhere")
    else:
        private.mkdir()
        private.chmod({"world_writable": 0o777, "group_writable": 0o770, "not_ours": 0o700}[attack])
    if attack == "not_ours":
        if os.geteuid() != 0:
            pytest.fail("run as root to hand the directory to another uid")
        os.chown(private, os.geteuid() + 4242, -1)
    with pytest.raises(ControlSocketError) as refused:
        await server.start()
    message = str(refused.value)
    assert str(private) in message and "\n" not in message
    assert not (private / "voicebridge").exists() and not (tmp_path / "elsewhere" / "voicebridge").exists()


@pytest.mark.e2e
def test_a_daemon_refuses_a_world_writable_fallback_directory_in_one_line(tmp_path: Path) -> None:
    private = tmp_path / f"voicebridge-{os.getuid()}"
    private.mkdir()
    private.chmod(0o777)
    config = tmp_path / "daemon.toml"
    config.write_text(
        tomli_w.dumps({"server": {"port": free_port(), "state_dir": str(tmp_path / "state")}})
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VOICEBRIDGE_") and k not in ("XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY")
    }
    result = subprocess.run(
        [sys.executable, "-m", "voicebridge", "serve", "--config", str(config)],
        env={**env, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    (refusal,) = [line for line in output.splitlines() if "control socket directory" in line]
    assert "ERROR" in refusal and "writable by group or others" in refusal and str(private) in refusal
    assert not (private / "voicebridge").exists()
