"""The outside systems the AI and agent gateways front, as real servers in processes of
their own, so that a fault can kill -9 them and start them again on the same port (the
daemon's config names that port).

- the fake LLM provider (daemon/bench/fake_llm.py): OpenAI's wire format, its answer to
  "say: TEXT" is exactly TEXT;
- an A2A peer made with the official a2a-sdk (tests/fixtures/a2a_peer.py, ``stream``
  kind: a Task whose history holds the message and whose artifact is "step one two
  three ", streamed or not).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

from benchmarks.chaos_harness.target import ENV, ROOT

LLM_KEY = "sk-chaos-provider"  # the provider's key: the daemon reads it from LLM_KEY_ENV
LLM_KEY_ENV = "CHAOS_LLM_KEY"
A2A_ANSWER = "step one two three "  # the stream peer's artifact, whatever the message


class OutsideServer:
    """One server process; ``argv(port)`` starts it, its first stdout line names the port."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind  # "llm" | "a2a"
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0

    def argv(self, port: int) -> list[str]:
        if self.kind == "llm":
            return [sys.executable, "-m", "daemon.bench.fake_llm", LLM_KEY, str(port)]
        return [sys.executable, "-m", "tests.fixtures.a2a_peer", "--kind", "stream",
                "--port", str(port)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" + ("/v1" if self.kind == "llm" else "")

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(self.argv(self.port), cwd=ROOT, env=ENV, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # the fake LLM: "PORT"; the peer: "LISTENING PORT"
        if not line.strip() or time.monotonic() > deadline:
            self.kill()
            raise RuntimeError(f"{self.name} did not start (exit {self.proc.returncode})")
        self.port = int(line.split()[-1])
        while True:  # the peer names its port before it listens
            try:
                socket.create_connection(("127.0.0.1", self.port), 1.0).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"{self.name} did not listen on {self.port}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()

    async def kill_and_restart(self, down: float) -> str:
        """kill -9, ``down`` seconds away, then the same server on the same port."""
        self.kill()
        await asyncio.sleep(down)
        await asyncio.to_thread(self.start)
        self.restarts += 1
        return f"down {down:.1f}s, back on port {self.port}"


def outside_servers() -> list[OutsideServer]:
    return [OutsideServer("llm", "llm"), OutsideServer("peer", "a2a")]
