"""Outside servers a test runs as subprocesses (official-SDK MCP servers over HTTP): a
free port for one, the wait until it listens, and the live SDK upstream
(tests/fixtures/live_upstream.py) over stdio or Streamable HTTP in either era."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import wait_for

LIVE = Path(__file__).parent / "fixtures" / "live_upstream.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: subprocess.Popen[bytes], port: int, what: str,
                   timeout: float = 20) -> None:
    """Until ``proc`` accepts connections on ``port``; fails at once if it died."""
    def listening() -> bool:
        assert proc.poll() is None, f"{what} died"
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False
    wait_for(listening, timeout, f"{what} to listen")


class Upstream:
    """The live server's [upstreams.live] table; over HTTP, the server itself, run here."""

    def __init__(self, kind: str, log: Path) -> None:
        self.kind, self.log = kind, log
        self.proc: subprocess.Popen[bytes] | None = None
        if kind == "stdio":
            self.table: dict[str, Any] = {"command": [sys.executable, str(LIVE)],
                                          "env": {"LIVE_LOG": str(log)}}
            return
        self.port = free_port()
        self.table = {"url": f"http://127.0.0.1:{self.port}/mcp"}
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(LIVE), str(self.port),
             *(["--legacy"] if self.kind == "legacy" else [])],
            env={**os.environ, "LIVE_LOG": str(self.log)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_listening(self.proc, self.port, "the live HTTP server")

    def requests(self) -> list[str]:
        """The resources/subscribe and unsubscribe requests it got (handshake era)."""
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
