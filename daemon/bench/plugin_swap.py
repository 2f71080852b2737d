"""Plugins: the cost of the bundled chain, and how fast a dropped file goes live.

Throughput: pipelined `echo` over TCP with an empty chain and with the bundled chain
(rate_limit without limits, secrets, schema, pii, result_cap), in the same run.
Swap latency: a file is dropped the documented way (.tmp, rename) and an agent calls in
a loop until every answer carries the new version; the time from the rename to that.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from daemon.bench.gateway_load import Driver, _measure
from daemon.bench.harness import bundled_plugins, summary, temporary_daemon
from daemon.client import AgentClient
from daemon.control.client import read_control_file
from daemon.front.auth import admin_token_path

TAGGER = '''
from daemon.plugin import Plugin

class Tagger(Plugin):
    name = "tagger"
    version = {version}

    async def after_call(self, call, result):
        return {{**result, "content": [{{"type": "text", "text": "v{version}"}}]}}
'''


def _throughput(plugin_dirs: list[str], duration: float) -> dict[str, Any]:
    with temporary_daemon(gateway_workers=2, plugin_dirs=plugin_dirs) as daemon:
        listen = read_control_file(daemon.state_dir)["listen"]
        token = admin_token_path(daemon.state_dir).read_text().strip()
        return _measure(functools.partial(Driver, "tcp", listen["tcp"], token, 8), duration, 16)


def _drop(directory: Path, version: int) -> float:
    tmp = directory / ".tagger.py.tmp"
    tmp.write_text(TAGGER.format(version=version))
    os.chmod(tmp, 0o644)
    started = time.perf_counter()
    os.replace(tmp, directory / "tagger.py")
    return started


def run(swaps: int = 10, duration: float = 3.0) -> dict[str, Any]:
    results: dict[str, Any] = {}
    results["empty_chain"] = _throughput([], duration)
    with bundled_plugins() as bundled:
        results["bundled_chain"] = _throughput([bundled], duration)
    results["ratio_bundled_to_empty"] = round(
        results["bundled_chain"]["calls_per_s"] / max(1, results["empty_chain"]["calls_per_s"]),
        3)
    drops = Path(tempfile.mkdtemp(prefix="wa-bench-swap-"))
    os.chmod(drops, 0o755)
    latencies = []
    try:
        with temporary_daemon(gateway_workers=2, plugin_dirs=[str(drops)]) as daemon:
            listen = read_control_file(daemon.state_dir)["listen"]
            token = admin_token_path(daemon.state_dir).read_text().strip()
            host, _, port = listen["tcp"].rpartition(":")
            with AgentClient.tcp(host, int(port), token) as agent:
                for version in range(1, swaps + 1):
                    started = _drop(drops, version)
                    deadline = started + 30
                    while time.perf_counter() < deadline:
                        text = agent.call_tool("echo", {})["content"][0]["text"]
                        if text == f"v{version}":
                            break
                    latencies.append((time.perf_counter() - started) * 1000)
    finally:
        shutil.rmtree(drops, ignore_errors=True)
    results["swap_latency_ms"] = summary(latencies)
    return results
