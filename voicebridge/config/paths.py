"""Where the daemon keeps its runtime files when the config leaves them empty: systemd's directories, the
XDG base directories, else a private fallback. These read the environment and the file system, so they
live here rather than in the schema."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def xdg_base_dir(variable: str) -> Path | None:
    """An XDG base directory from the environment; unset, empty or relative means none (the spec says a
    relative path is invalid and must be ignored)."""
    value = os.environ.get(variable, "")
    return Path(value) if value and os.path.isabs(value) else None


def private_runtime_fallback() -> Path:
    """The per-user directory for the control socket when there is no runtime dir. It lives in a shared,
    world-writable place, so the control server refuses it unless it is ours alone."""
    return Path(tempfile.gettempdir()) / f"voicebridge-{os.getuid()}"


def private_dir_problem(path: Path) -> str:
    """Why an existing `path` is not ours alone ("is a symlink", …), or "" when it is (or is absent)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return ""
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.geteuid():
        return f"belongs to uid {info.st_uid}, not to us (uid {os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return ""


def control_socket_path(configured: str) -> Path:
    """The control socket: configured, else systemd's RuntimeDirectory, else $XDG_RUNTIME_DIR, else a
    private directory of our own under the temp dir (checked by the control server before use)."""
    if configured:
        return Path(configured)
    if runtime := os.environ.get("RUNTIME_DIRECTORY"):
        return Path(runtime.split(":")[0]) / "control.sock"
    base = xdg_base_dir("XDG_RUNTIME_DIR") or private_runtime_fallback()
    return base / "voicebridge" / "control.sock"


def state_path(configured: str) -> Path:
    """Where durable state lives: configured, else systemd's StateDirectory, else $XDG_STATE_HOME,
    else ~/.local/state (the XDG base-directory spec's default)."""
    if configured:
        return Path(configured)
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    base = xdg_base_dir("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return base / "voicebridge"
