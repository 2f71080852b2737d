"""stop: stop every child in reverse order, then the master exits 0 (like SIGTERM).

request args: {}
result: {"pid": master pid}; the CLI then waits for that pid to exit.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.master.arbiter import Master

NAME = "stop"


async def execute(master: Master, args: dict[str, Any]) -> dict[str, Any]:
    master.request_stop()
    return {"pid": os.getpid()}
