"""status: the live tree.

request args: {}
result: {"daemon": {...}, "tree": {name, kind, state, pid, restarts, uptime, cpu_percent,
         rss, children: [...]}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.master import Master

NAME = "status"


async def execute(master: Master, args: dict[str, Any]) -> dict[str, Any]:
    return master.snapshot()
