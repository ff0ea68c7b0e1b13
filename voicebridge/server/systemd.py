"""The systemd notify protocol (READY, STATUS, WATCHDOG, STOPPING) over $NOTIFY_SOCKET, no dependency."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify datagrams when run under systemd; does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@' and addressed with a leading NUL.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_interval: float | None = (
            int(watchdog_usec) / 1_000_000 / 2 if watchdog_usec.isdigit() and int(watchdog_usec) > 0 else None
        )

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a notify socket."""
        return bool(self._address)

    def notify(self, *fields: str) -> None:
        """Send `KEY=VALUE` fields; failures are logged, never raised (notification is best effort)."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(fields).encode())
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        """Tell systemd start-up is complete."""
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """Update the one-line status `systemctl status` shows."""
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        """Pet the watchdog."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd we are shutting down."""
        self.notify("STOPPING=1", "STATUS=draining calls")
