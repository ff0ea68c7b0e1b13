"""Doctor checks of the host: the control socket's and state's directories, and the open-file limit."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from voicebridge.config.paths import private_dir_problem, private_runtime_fallback
from voicebridge.config.schema import Settings
from voicebridge.doctor.report import Check

# File descriptors: stdio, listening and control sockets, epoll and self-pipes, thread-pool wakeups,
# model files and metrics scrapes fit in 64 with room; each call holds its media WebSocket, a backend
# connection, a provider REST connection, an Azure TTS socket when Azure speaks, an outbox/recording
# file, and slack for connections being replaced: 8.
FDS_BASE = 64
FDS_PER_CALL = 8
# Unix socket paths are limited by sun_path (108 bytes on Linux, including the terminating NUL).
UNIX_PATH_MAX = 107


def _writable(name: str, directory: Path, fix: str, subject: str = "") -> Check:
    """`directory` is writable, or does not exist yet and its nearest existing ancestor is."""
    subject = subject or str(directory)
    probe = directory
    # lexists: a dangling symlink stops the walk, since nothing could be created through it.
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return Check(name, "fail", f"{probe} is not a directory", fix)
    if not os.access(probe, os.W_OK | os.X_OK):
        what = f"{directory} is" if probe == directory else f"{directory} does not exist and {probe} is"
        return Check(name, "fail", f"{what} not writable by uid {os.getuid()}", fix)
    if probe == directory:
        return Check(name, "pass", f"{subject}: {directory} is writable")
    return Check(name, "pass", f"{subject}: {directory} will be created ({probe} is writable)")


def check_control_socket(settings: Settings) -> Check:
    """The control socket's directory can hold it, and its path fits a Unix socket address."""
    path = settings.control_socket_path()
    fix = "set control.socket_path to a writable place (systemd: RuntimeDirectory=)"
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        detail = f"{path} is {len(os.fsencode(path))} bytes; Unix sockets allow {UNIX_PATH_MAX}"
        return Check("control socket", "fail", detail, "set control.socket_path to a shorter path")
    fallback = private_runtime_fallback()
    if path.is_relative_to(fallback) and (problem := private_dir_problem(fallback)):
        # The daemon refuses this directory (another user could control the socket): so does doctor.
        return Check("control socket", "fail", f"{fallback} {problem}", f"remove {fallback}, or {fix}")
    return _writable("control socket", path.parent, fix, subject=str(path))


def check_state_dir(settings: Settings) -> Check:
    """The state directory (outbox, recordings) is writable or can be created."""
    fix = "set server.state_dir to a writable place (systemd: StateDirectory=)"
    return _writable("state dir", settings.state_path(), fix, subject="outbox and recordings")


def check_open_files(settings: Settings) -> Check:
    """The soft RLIMIT_NOFILE covers FDS_BASE + FDS_PER_CALL × server.max_concurrent_calls."""
    calls = settings.server.max_concurrent_calls
    needed = FDS_BASE + FDS_PER_CALL * calls
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    shown = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    detail = f"soft limit {shown} here; {calls} calls need ~{needed} ({FDS_BASE} + {FDS_PER_CALL} per call)"
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return Check("open files", "pass", detail)
    fix = f"raise LimitNOFILE= in the systemd unit or `ulimit -n` (hard limit {hard})"
    return Check("open files", "warn", detail, fix)
