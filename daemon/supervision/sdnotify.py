"""systemd's sd_notify datagram protocol (sd_notify(3)), spoken directly.

One datagram of newline-separated KEY=VALUE lines to $NOTIFY_SOCKET; a leading "@" names
the abstract namespace.  Without NOTIFY_SOCKET every call is a no-op, so the daemon runs
the same in a terminal.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("sdnotify")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        self.watchdog_interval = self._watchdog_interval(env)
        self._sock: socket.socket | None = None

    @staticmethod
    def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
        """Half of WatchdogSec=, as sd_watchdog_enabled(3) recommends; None when off."""
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        if pid and pid != str(os.getpid()):
            return None  # meant for another process
        return int(usec) / 2_000_000

    def send(self, *lines: str) -> bool:
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address.lstrip("\0"), exc)
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
