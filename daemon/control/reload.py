"""reload: re-read the config and apply it (also SIGHUP and `systemctl reload`).

request args: {}
result: {"ok": true, "changes": [...]} or {"ok": false, "error": "file: key ...: ..."}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.master.arbiter import Master

NAME = "reload"


async def execute(master: Master, args: dict[str, Any]) -> dict[str, Any]:
    return await master.reload()
