"""The real Wyoming STT server (wyoming-faster-whisper, from PyPI) on a loopback port with the shipped
tiny.en model, for tests and bench/ to point `stt.engine = "wyoming"` at. It never downloads anything
(`--local-files-only`) and is started and stopped like any other process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from voicebridge.sim.daemon import free_port
from voicebridge.speech.models import default_whisper_path


@dataclass
class WyomingServer:
    """A running wyoming-faster-whisper: `url` (tcp://127.0.0.1:PORT) is what stt.url takes."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGKILL: the server dies as a crashed one would, mid-request or not."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_wyoming_server(workdir: Path, threads: int = 1, ready_timeout: float = 60.0) -> WyomingServer:
    """Start the server and return once it accepts connections (its model is loaded by then)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"wyoming-{port}.log"
    command = [
        sys.executable,
        "-m",
        "wyoming_faster_whisper",
        "--uri",
        f"tcp://127.0.0.1:{port}",
        "--model",
        default_whisper_path(),
        "--stt-library",
        "faster-whisper",
        "--local-files-only",
        "--data-dir",
        str(workdir),
        "--language",
        "en",
        "--beam-size",
        "1",
        "--cpu-threads",
        str(threads),
    ]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    server = WyomingServer(process, port, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"wyoming-faster-whisper exited with {process.returncode}:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"wyoming-faster-whisper did not listen within {ready_timeout:g}s:\n{server.log()}")
