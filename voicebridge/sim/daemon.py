"""The daemon starter for the wire tests and the benchmarks: `voicebridge serve` as a child process on a free
loopback port, with a config written from overrides, its own state directory and control socket, a log
file, and a return only once it answers ready. Nothing in the daemon itself uses this module."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DaemonProcess:
    """A `voicebridge serve` child process on a loopback port, logging to a file."""

    process: subprocess.Popen[str]
    port: int
    log_path: Path
    control_socket: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the daemon has logged so far."""
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (drain) and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_daemon(
    workdir: Path,
    overrides: dict[str, dict[str, Any]] | None = None,
    ready_timeout: float = 180.0,
    ready_path: str = "/ready",
    entry: tuple[str, ...] = ("-m", "voicebridge", "serve"),
) -> DaemonProcess:
    """Start the daemon with a config built from `overrides`; return once `ready_path` answers 200.

    `entry` is what Python runs, given `--config`: `voicebridge serve`, or a script that serves the
    daemon with engines of its own (bench/naive_daemon.py)."""
    # A fixed port when asked (a restart the providers' callbacks must find again), else a free one.
    port = int((overrides or {}).get("server", {}).get("port") or free_port())
    config: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": port, "state_dir": str(workdir / "state")},
        "control": {"socket_path": str(workdir / f"control-{port}.sock")},
    }
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"daemon-{port}.toml"
    config_path.write_text(tomli_w.dumps(config))
    log_path = workdir / f"daemon-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBRIDGE_")}
    # The allocator as the systemd unit and the image run it. With glibc's default (8 arenas per core) the
    # fuzz test's idle RSS after a second round of hostile 1 MiB frames was +39 to +53 MB on a loaded
    # machine; with 2 arenas, +13 to +21 MB.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, *entry, "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            text=True,
        )
    daemon = DaemonProcess(process, port, log_path, Path(config["control"]["socket_path"]))
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{daemon.log()}")
        try:
            with urllib.request.urlopen(f"{daemon.http}{ready_path}", timeout=2) as response:
                if response.status == 200:
                    return daemon
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"daemon did not become ready in {ready_timeout:.0f}s:\n{daemon.log()}")
