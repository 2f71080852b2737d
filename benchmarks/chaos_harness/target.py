"""The daemon under test: its config, its process and descendants, its control endpoint.

It runs this checkout's code (``PYTHONPATH`` is the repository root) in a short temp
state dir (ipc:// paths are limited to 107 bytes), on free ports.  Every process it ever
saw is remembered, so that ``stop`` can tell which outlived the master and kill them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from daemon.bench.harness import stop_daemon, write_config
from daemon.control.client import ControlClient
from daemon.control.status import workers_in

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "daemon"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# Fast liveness so that faults heal in about a second, and restart intensity generous
# enough that the chaos itself never exhausts a supervisor.
SUPERVISION = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0, "abort_grace": 0.5,
               "backoff_initial": 0.02, "backoff_max": 0.2, "start_timeout": 10.0,
               "shutdown_timeout": 2.0, "max_restarts": 50, "max_seconds": 10.0}


class DaemonUnderTest:
    def __init__(self, state_dir: Path, sections: dict[str, dict[str, Any]],
                 env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.env = {**ENV, **(env or {})}  # + the secrets the config names
        self.config = state_dir / "wa.toml"
        write_config(self.config, sections)
        self.log_path = state_dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, psutil.Process] = {}

    # -- starting -------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*CLI, "serve", "--config", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            snapshot = self._try_status()
            if snapshot is not None and all_ready(snapshot):
                self.track()
                return snapshot
            time.sleep(0.1)
        raise RuntimeError(f"the daemon was not ready within {timeout:g}s")

    def _try_status(self) -> dict[str, Any] | None:
        try:
            return self.status()
        except Exception:  # not up yet: control.json missing or stale
            return None

    # -- observing ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = ControlClient(self.state_dir).call("status")
        return snapshot

    async def astatus(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.status)

    def listen(self) -> dict[str, str]:
        info: dict[str, Any] = json.loads((self.state_dir / "control.json").read_text())
        return info["listen"]  # type: ignore[no-any-return]

    async def cli(self, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *CLI, *args, "--config", str(self.config), env=self.env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, "", f"timed out after {timeout:g}s"
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    def track(self) -> list[psutil.Process]:
        """Remember every descendant seen now (workers, forkserver, upstream servers)."""
        if self.proc is None:
            return []
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for p in found:
            self.seen.setdefault(p.pid, p)
        return found

    def memory(self) -> dict[str, int]:
        """RSS in bytes of the master and of each worker, by name."""
        assert self.proc is not None
        out = {"master": psutil.Process(self.proc.pid).memory_info().rss}
        for name, worker in workers_in(self.status()["tree"]).items():
            with contextlib.suppress(psutil.Error, TypeError):  # mid-restart: no pid
                out[name] = psutil.Process(worker["pid"]).memory_info().rss
        return out

    # -- stopping -------------------------------------------------------------------

    async def stop(self) -> tuple[bool, str]:
        """``workingagents stop``: (stopped cleanly, what the CLI said)."""
        self.track()
        rc, out, err = await self.cli("stop", timeout=30)
        return rc == 0, (out + err).strip()

    def leftovers(self) -> list[str]:
        """Processes of the daemon still alive (zombies excluded: someone will reap)."""
        left = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
            except psutil.Error:
                pass
        return left

    def kill_everything(self) -> None:
        """Whatever happened, nothing of the daemon outlives the harness."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.track()
            stop_daemon(self.proc, self.seen.values())


def all_ready(snapshot: dict[str, Any]) -> bool:
    workers = workers_in(snapshot["tree"])
    return bool(workers) and all(w["state"] == "ready" for w in workers.values())
