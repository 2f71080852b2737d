"""Memory per idle worker: RSS, and the PSS/USS that forkserver copy-on-write leaves.

Measured with an empty chain (the top-level keys) and with the bundled plugins loaded
(``bundled_chain``), in the same run."""

from __future__ import annotations

import statistics
from typing import Any

import psutil

from daemon.bench.harness import bundled_plugins, temporary_daemon


def run(workers: int = 8) -> dict[str, Any]:
    with bundled_plugins() as bundled:
        return {**_measure(workers, []), "bundled_chain": _measure(workers, [bundled])}


def _measure(workers: int, plugin_dirs: list[str]) -> dict[str, Any]:
    with temporary_daemon(gateway_workers=workers, plugin_dirs=plugin_dirs) as daemon:
        snap = daemon.status()
        # gateway workers; the audit process counts with the helpers (one per daemon)
        pids = [w["pid"] for name, w in daemon.workers().items() if name.startswith("gateway-")]
        master = psutil.Process(snap["daemon"]["pid"])
        helpers = [p for p in master.children() if p.pid not in pids]
        per_worker = [psutil.Process(pid).memory_full_info() for pid in pids]
        helper_mem = [p.memory_full_info() for p in helpers]
        master_mem = master.memory_full_info()

    def mib(values: list[int]) -> float:
        return round(statistics.median(values) / 1048576, 2)
    return {
        "workers": len(pids),
        "worker_rss_mib": mib([m.rss for m in per_worker]),
        "worker_pss_mib": mib([m.pss for m in per_worker]),
        "worker_uss_mib": mib([m.uss for m in per_worker]),
        "master_rss_mib": round(master_mem.rss / 1048576, 2),
        "master_uss_mib": round(master_mem.uss / 1048576, 2),
        "helpers_pss_mib": round(sum(m.pss for m in helper_mem) / 1048576, 2),
        "total_pss_mib": round((sum(m.pss for m in per_worker) + master_mem.pss
                                + sum(m.pss for m in helper_mem)) / 1048576, 2),
    }
