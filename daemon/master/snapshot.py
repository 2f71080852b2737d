"""What `status` shows of a running master: the daemon, the tree, plugins, audit,
quarantined agents and upstreams, with the health verdict (control/health.py)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import psutil

from daemon import __version__
from daemon.control import health

if TYPE_CHECKING:
    from daemon.master.arbiter import Master


def snapshot(master: Master) -> dict[str, Any]:
    settings, reloads = master.settings, master.reconfigure
    me = psutil.Process()
    with me.oneshot():
        cpu, rss = me.cpu_percent(None), me.memory_info().rss
    found = {
        "daemon": {"version": __version__, "pid": os.getpid(),
                   "uptime": round(time.monotonic() - master.started_at, 3),
                   "config": str(settings.source) if settings.source else None,
                   "state_dir": str(settings.state_dir), "cpu_percent": cpu,
                   "rss": rss, "healthy": master.root.healthy(), "reloads": reloads.reloads,
                   "last_reload": reloads.last_reload,
                   "stopping": master.stopping},
        "tree": master.root.snapshot(),
        "plugins": master.plugins.status(),
        "audit": master.audit_state,
        "quarantine": master.board.quarantine.snapshot(time.monotonic()),
        "upstreams": master.upstreams.status(),
        "a2a_peers": master.cards.status(),
    }
    return {**health.assess(found), **found}
