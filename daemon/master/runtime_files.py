"""What a daemon keeps in its runtime dir, and its removal once the daemon has stopped.

The master, the audit process and each upstream worker bind ipc:// sockets there, every
process writes its metrics to per-pid files under ``metrics/``, and gateway workers share
their call slots with the master under ``slots/``.  ZeroMQ leaves an
ipc socket's file behind when it closes, and nobody else will remove them: the master
does, after every process of its tree has exited (so nothing is still bound to them).
"""

from __future__ import annotations

import contextlib
import shutil
import stat
from pathlib import Path

from daemon.config import Settings
from daemon.supervision.spec import SupervisorSpec
from daemon.supervision.supervisor import worker_specs

IPC = "ipc://"
PER_RUN_DIRS = ("metrics", "slots")  # made afresh at each start


def metrics_dir(settings: Settings) -> Path:
    return settings.runtime_dir / "metrics"


def sockets(settings: Settings, spec: SupervisorSpec) -> list[Path]:
    """The ipc socket paths of this daemon: control, bus, audit, and any a worker binds."""
    endpoints = [settings.control_endpoint, settings.bus_endpoint, settings.audit_endpoint]
    endpoints += [str(w.options.get("endpoint", "")) for w in worker_specs(spec)]
    return [Path(e.removeprefix(IPC)) for e in dict.fromkeys(endpoints) if e.startswith(IPC)]


def remove(settings: Settings, spec: SupervisorSpec) -> None:
    for path in sockets(settings, spec):
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):  # never a file someone put there
                path.unlink()
    for name in PER_RUN_DIRS:
        shutil.rmtree(settings.runtime_dir / name, ignore_errors=True)
