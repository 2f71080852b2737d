"""Fixtures that start real daemons in temp state dirs and always stop them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.bench.harness import stop_daemon, write_config
from daemon.config import locate_state_dir
from daemon.control.client import ControlClient
from daemon.control.status import workers_in

pytest_plugins = ["tests.parallel"]  # xdist workers, and tests marked serial run alone

FIXTURES = Path(__file__).parent / "fixtures"
CLI = [sys.executable, "-m", "daemon"]

# Fast liveness so that hung-worker and restart tests take seconds, not minutes.
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0, "abort_grace": 0.5,
        "backoff_initial": 0.02, "backoff_max": 0.2, "start_timeout": 5.0,
        "shutdown_timeout": 2.0}


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Daemon:
    """One master process (``workingagents serve`` or a test tree) and its descendants."""

    def __init__(self, state_dir: Path, tree: dict[str, Any] | None = None,
                 supervision: dict[str, Any] | None = None,
                 daemon: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 control: dict[str, Any] | None = None,
                 extra: dict[str, dict[str, Any]] | None = None,
                 wrap: Callable[[list[str]], list[str]] | None = None):
        self.state_dir = state_dir
        self.config = write_config(state_dir / "wa.toml", {
            "daemon": {"state_dir": str(state_dir), **(daemon or {})},
            "supervision": {**FAST, **(supervision or {})},
            "control": control or {},
            "listen": {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*"},  # free ports
            "plugins": {"dirs": []},  # an empty chain unless a test brings plugins
            "metrics": {"listen": "127.0.0.1:0"},
            **(extra or {}),
        })
        self.log_path = state_dir / "daemon.log"
        if tree is not None:
            tree_file = state_dir / "tree.json"
            tree_file.write_text(json.dumps(tree))
            argv = [sys.executable, str(FIXTURES / "tree_master.py"), str(self.config),
                    str(tree_file)]
        else:
            argv = [*CLI, "serve", "--config", str(self.config)]
        if wrap is not None:  # e.g. run in a mount namespace; must exec the master in place
            argv = wrap(argv)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.pid = self.proc.pid
        self._seen: dict[int, psutil.Process] = {}

    # -- observing ----------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args, "--config", str(self.config)],
                              capture_output=True, text=True, timeout=timeout)

    def status(self) -> dict[str, Any]:
        """`workingagents status --json`'s snapshot, asked in-process: tests poll this in
        loops, and each CLI start costs ~0.3 s of CPU (cli() tests the command itself)."""
        client = ControlClient(locate_state_dir(str(self.config)))
        snapshot: dict[str, Any] = client.call("status", timeout=5)
        return snapshot

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            if "ready:" not in self.log():
                return None
            return self.status()
        return wait_for(ready, timeout, "the daemon to be ready")  # type: ignore[no-any-return]

    def workers(self) -> dict[str, dict[str, Any]]:
        """name -> worker snapshot, across the whole tree."""
        return workers_in(self.status()["tree"])

    def pids(self) -> dict[str, int]:
        return {name: w["pid"] for name, w in self.workers().items() if w["state"] == "ready"}

    def descendants(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            found = []
        for p in found:
            self._seen[p.pid] = p
        return found

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    # -- stopping: always, whatever the test did -------------------------------------

    def stop(self) -> None:
        self.descendants()
        stop_daemon(self.proc, self._seen.values())  # workers, forkserver, grandchildren
        self._log.close()


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Short paths: ipc:// socket paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="wa-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_daemon(state_dir: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(**kwargs: Any) -> Daemon:
        d = Daemon(state_dir, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


BUNDLED = Path(__file__).parent.parent / "plugins"


@pytest.fixture
def bundled_daemon(start_daemon: Callable[..., Daemon], state_dir: Path) -> Callable[..., Any]:
    """A gateway daemon with some bundled plugins (copied into a plugin dir), each with
    its config table; returns (daemon, plugin dir) once they are loaded."""
    from tests.gateway_helpers import gateway_config

    def start(names: list[str], **config: Any) -> tuple[Daemon, Path]:
        plugin_dir = state_dir / "plugins"
        plugin_dir.mkdir(mode=0o755, exist_ok=True)
        for name in names:
            shutil.copy(BUNDLED / f"{name}.py", plugin_dir / f"{name}.py")
        extra = gateway_config()
        extra["plugins"] = {"dirs": [str(plugin_dir)], "config": config}
        d = start_daemon(extra=extra)
        d.wait_ready()

        def loaded() -> bool:
            return set(names) <= {p["name"] for p in d.status()["plugins"]["loaded"]}
        wait_for(loaded, 30, f"{names} to load")
        return d, plugin_dir
    return start


@pytest.fixture
def fake() -> Iterator[Any]:
    """A fake OpenAI/Anthropic provider (daemon.bench.fake_llm), stopped afterwards."""
    from tests.fixtures.fake_llm import FakeLlm

    with FakeLlm() as server:
        yield server
