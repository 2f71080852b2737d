"""Time from kill -9 of a worker to its replacement serving (READY), over many kills.

Two clocks: "seen" is kill -> the bench sees the new incarnation READY in `status`
(includes one status round trip); "master" is the master's own exit event -> READY.
For scale, the same run times what a restart would cost without the preloaded forkserver:
a bare interpreter start, and one that imports the worker's modules.
The kills run twice in the same run: with an empty chain (the top-level keys) and with
the bundled plugins loaded (``bundled_chain``), whose imports and compiled versions a
restart should not pay again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from daemon.bench.harness import bundled_plugins, summary, temporary_daemon


def _interpreter_start_ms(code: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _kills(kills: int, gap: float, plugin_dirs: list[str]) -> dict[str, Any]:
    # Kills are spaced beyond backoff_reset, so each one is a one-off crash (no backoff),
    # and the intensity is raised so that the bench itself never trips it.
    tuning = {"max_restarts": kills * 10, "max_seconds": 10.0, "backoff_reset": gap / 2}
    seen: list[float] = []
    master: list[float] = []
    with temporary_daemon(gateway_workers=2, supervision=tuning,
                          plugin_dirs=plugin_dirs) as daemon:
        for _ in range(kills):
            before = daemon.workers()["gateway-0"]
            t0 = time.perf_counter()
            os.kill(before["pid"], signal.SIGKILL)
            while True:
                now = daemon.workers()["gateway-0"]
                if now["incarnation"] > before["incarnation"] and now["state"] == "ready":
                    break
            seen.append((time.perf_counter() - t0) * 1000)
            master.append(now["last_recovery_ms"])
            time.sleep(gap)
    return {"kill_to_ready_seen_ms": summary(seen), "exit_to_ready_master_ms": summary(master)}


def run(kills: int = 50, gap: float = 0.3) -> dict[str, Any]:
    empty = _kills(kills, gap, [])
    with bundled_plugins() as plugins:
        bundled = _kills(kills, gap, [plugins])
    runs = max(3, min(10, kills))
    bare = _interpreter_start_ms("pass", runs)
    imports = _interpreter_start_ms("import daemon.worker.runtime, zmq, uvloop, orjson", runs)
    return {**empty, "bundled_chain": bundled,
            "ratio_bundled_to_empty": round(bundled["exit_to_ready_master_ms"]["median"]
                                            / empty["exit_to_ready_master_ms"]["median"], 2),
            "reference_bare_interpreter_ms": summary(bare),
            "reference_interpreter_with_worker_imports_ms": summary(imports)}
