"""Client side of the control socket (see `voicebridge.server.control`): one request, one JSON line back."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from voicebridge.cli.errors import CliError
from voicebridge.config.load import load_settings
from voicebridge.config.paths import private_dir_problem, private_runtime_fallback

PROTOCOL_VERSION = 1
TIMEOUT_S = 10.0
# The longest answer read (an outbox listing with payloads is well under this).
MAX_REPLY_BYTES = 64 * 1024 * 1024


class DaemonUnreachable(Exception):
    """No daemon answers on the control socket."""


class ControlRequestFailed(Exception):
    """The daemon answered but refused the request (`code` says why, e.g. unknown_call)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


ControlParam = str | int | float | bool | dict[str, str]


class ControlClient:
    """Talks to a running daemon over its Unix control socket."""

    def __init__(self, path: Path, timeout: float = TIMEOUT_S) -> None:
        self.path = path
        self._timeout = timeout

    def request(self, op: str, **params: ControlParam) -> dict[str, Any]:
        """Send one operation and return its result; raise DaemonUnreachable or ControlRequestFailed."""
        line = json.dumps({"version": PROTOCOL_VERSION, "op": op, **params}).encode() + b"\n"
        fallback = private_runtime_fallback()
        if self.path.is_relative_to(fallback) and (problem := private_dir_problem(fallback)):
            # The daemon refuses such a directory, so whatever listens there is not it: it would get the
            # request (a transfer's number) and could answer anything.
            raise DaemonUnreachable(
                f"refusing the control socket in {fallback}: it {problem}, so another user may own what "
                "answers there; remove it, or set control.socket_path or XDG_RUNTIME_DIR"
            )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self._timeout)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError):
                raise DaemonUnreachable(
                    f"no voicebridge daemon is running (nothing answers on {self.path}); "
                    "start one with `voicebridge serve`"
                ) from None
            except PermissionError:
                raise DaemonUnreachable(
                    f"permission denied on {self.path}: run as the daemon's user, "
                    "or set control.group and join that group"
                ) from None
            except OSError as exc:
                raise DaemonUnreachable(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
            try:
                sock.sendall(line)
                reply = _read_line(sock)
            except TimeoutError:
                raise DaemonUnreachable(f"no answer on {self.path} within {self._timeout:.0f}s") from None
            except OSError as exc:
                raise DaemonUnreachable(f"the daemon closed {self.path}: {exc.strerror or exc}") from None
            except ValueError:
                raise DaemonUnreachable(f"the answer on {self.path} is too long") from None
        try:
            # Whatever answers on the path may not be a voicebridge: a deep or huge answer is an error too.
            response = json.loads(reply.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise DaemonUnreachable(
                f"unreadable answer on {self.path}: is it a voicebridge socket?"
            ) from None
        if not isinstance(response, dict) or "ok" not in response:
            raise DaemonUnreachable(f"unexpected answer on {self.path}: {reply[:80]!r}")
        if not response["ok"]:
            raise ControlRequestFailed(str(response.get("code", "error")), str(response.get("error", "")))
        result = response.get("result")
        return result if isinstance(result, dict) else {}


def _read_line(sock: socket.socket) -> bytes:
    buffer = bytearray()
    while not buffer.endswith(b"\n"):
        piece = sock.recv(65536)
        if not piece:
            if not buffer:
                raise ConnectionResetError(0, "closed without answering")
            break
        buffer += piece
        if len(buffer) > MAX_REPLY_BYTES:
            raise ValueError("answer too long")
    return bytes(buffer)


def client_for(config: Path | None, socket_path: Path | None) -> ControlClient:
    """The client for `--socket`, else for the control socket the config names."""
    return ControlClient(socket_path or load_settings(config).control_socket_path())


def request_op(client: ControlClient, op: str, **params: ControlParam) -> dict[str, Any]:
    """One operation; failures become a one-line CliError with exit code 1."""
    try:
        return client.request(op, **params)
    except (DaemonUnreachable, ControlRequestFailed) as exc:
        raise CliError(str(exc), exit_code=1) from None
