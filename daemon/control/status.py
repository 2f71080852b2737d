"""status: the live tree.

request args: {}
result: {"health": "healthy" | "degraded", "reasons": [...] (see control/health.py),
         "daemon": {...}, "tree": {name, kind, state, pid, restarts, uptime, cpu_percent,
         rss, children: [...]}, "plugins": {...}, "audit": {...},
         "upstreams": {name: {state, since, why, retry_in, tools}}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.master.arbiter import Master

NAME = "status"


async def execute(master: Master, args: dict[str, Any]) -> dict[str, Any]:
    return master.snapshot()


def workers_in(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> worker entry, for every worker in a status tree (or subtree)."""
    if node["kind"] == "worker":
        return {node["name"]: node}
    out: dict[str, dict[str, Any]] = {}
    for child in node["children"]:
        out.update(workers_in(child))
    return out
