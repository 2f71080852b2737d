"""Outside servers a test runs as subprocesses (official-SDK MCP servers over HTTP): a
free port for one, and the wait until it listens."""

from __future__ import annotations

import socket
import subprocess

from tests.conftest import wait_for


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
