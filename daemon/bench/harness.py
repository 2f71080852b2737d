"""Start a throwaway daemon in a temp state dir, talk to it, always stop it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil

from daemon.control.client import ControlClient, NotRunning
from daemon.control.status import workers_in


def percentile(samples: list[float], pct: float) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(pct * 10) - 1]


def summary(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "median": statistics.median(samples),
            "p99": percentile(samples, 99), "min": min(samples), "max": max(samples)}


class BenchDaemon:
    def __init__(self, state_dir: Path, proc: subprocess.Popen[bytes]) -> None:
        self.state_dir = state_dir
        self.proc = proc
        self.client: ControlClient

    def status(self) -> dict[str, Any]:
        snap: dict[str, Any] = self.client.call("status", timeout=10)
        return snap

    def workers(self) -> dict[str, dict[str, Any]]:
        return workers_in(self.status()["tree"])


def stop_daemon(proc: subprocess.Popen[Any], seen: Iterable[psutil.Process] = (),
                timeout: float = 15.0) -> None:
    """SIGTERM to the master (a graceful stop), SIGKILL if it takes longer than
    ``timeout``; then kill whatever of its tree is still there (``seen``: its
    descendants, collected while it ran), so nothing outlives a bench, a test or the
    chaos harness."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for p in seen:
        with contextlib.suppress(psutil.Error):
            if p.is_running():
                p.kill()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}"
                                for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A config file from {"section.name": {key: value}} (the benches, the chaos
    harness and the tests all write theirs this way).  A [listen] table without an
    ``http`` key gets a free port, never the default 7780 that another run may hold."""
    if "listen" in sections and "http" not in sections["listen"]:
        sections = {**sections, "listen": {**sections["listen"], "http": "127.0.0.1:0"}}
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n"
                                                     for k, v in body.items())
                            for name, body in sections.items()))
    return path


BUNDLED_PLUGINS = Path(__file__).resolve().parent.parent.parent / "plugins"


@contextlib.contextmanager
def bundled_plugins() -> Iterator[str]:
    """A private copy of the checkout's bundled plugins, for ``plugin_dirs``."""
    copy = tempfile.mkdtemp(prefix="wa-bench-plugins-")
    try:
        for plugin in BUNDLED_PLUGINS.glob("*.py"):
            shutil.copy(plugin, copy)
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)


@contextlib.contextmanager
def temporary_daemon(gateway_workers: int = 2, supervision: dict[str, Any] | None = None,
                     plugin_dirs: list[str] | None = None,
                     audit: dict[str, Any] | None = None,
                     extra: dict[str, dict[str, Any]] | None = None,
                     env: dict[str, str] | None = None) -> Iterator[BenchDaemon]:
    """``extra``: more config tables ({"llm.providers.x": {...}}); ``env``: more
    environment for the daemon (provider keys)."""
    state_dir = Path(tempfile.mkdtemp(prefix="wa-bench-", dir="/tmp"))
    config = write_config(state_dir / "wa.toml", {
        "daemon": {"state_dir": str(state_dir), "gateway_workers": gateway_workers,
                   "log_level": "warning"},
        "listen": {"tcp": "127.0.0.1:0", "zmq": "tcp://127.0.0.1:*"},
        "plugins": {"dirs": plugin_dirs or []},  # default: empty chain
        "metrics": {"listen": "127.0.0.1:0"},
        "audit": audit or {},
        "supervision": supervision or {}, **(extra or {})})
    log = open(state_dir / "daemon.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "serve", "--config", str(config)],
                            stdout=log, stderr=log, env={**os.environ, **(env or {})})
    daemon = BenchDaemon(state_dir, proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {(state_dir / 'daemon.log').read_text()}")
            try:
                daemon.client = ControlClient(state_dir)
                if daemon.status()["daemon"]["healthy"]:
                    break
            except NotRunning:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("daemon did not become ready within 30s")
            time.sleep(0.05)
        yield daemon
    finally:
        stop_daemon(proc, timeout=30)
        log.close()
        shutil.rmtree(state_dir, ignore_errors=True)
