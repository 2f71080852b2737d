"""Calls/s and p99 with each audit durability mode: "never", "batch", "always".

One daemon per mode, the audit log on the state dir's filesystem (the bench's temp dir,
so on the same disk as /tmp), TCP agents pipelining echo calls as in the gateway bench.
Every call's response waits for its record in "batch" (group commit) and "always" (one
fsync per record); in "never" nothing waits.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from daemon.bench.gateway_load import Driver, _measure
from daemon.bench.harness import temporary_daemon
from daemon.control.client import read_control_file
from daemon.front.auth import admin_token_path

MODES = ("never", "batch", "always")


def run(conns: int = 8, window: int = 16, duration: float = 3.0) -> dict[str, Any]:
    results: dict[str, Any] = {"conns": conns, "window": window, "duration_s": duration,
                               "cpus": os.cpu_count()}
    for mode in MODES:
        with temporary_daemon(gateway_workers=2, audit={"fsync": mode}) as daemon:
            listen = read_control_file(daemon.state_dir)["listen"]
            token = admin_token_path(daemon.state_dir).read_text().strip()
            make = functools.partial(Driver, "tcp", listen["tcp"], token, conns)
            results[f"fsync_{mode}"] = _measure(make, duration, window)
    never = results["fsync_never"]["calls_per_s"] or 1
    for mode in ("batch", "always"):
        results[f"ratio_{mode}_to_never"] = round(results[f"fsync_{mode}"]["calls_per_s"]
                                                  / never, 3)
    return results
