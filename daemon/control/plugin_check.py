"""plugin_check: validate a plugin version as the hot loader would, on the live state.

`workingagents plugins check FILE` with a daemon running: the CLI reads the file (with
the owner and mode checks the loader makes) and sends its bytes; the master runs the
sandbox check with its tables in force and ``migrate`` on a copy of the serving
version's live state, fetched from the workers.  Nothing is swapped.

request args: {"path": "/etc/workingagents/plugins.d/quota.py", "code": "<base64>"}
result: {"ok": true, "name", "version", "priority", "hooks",
         "migrated_from": the live version migrate ran from, or null (none serves)}
        or {"ok": false, "error": "migrate raised ValueError: ..."}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Any

from daemon.control.command_error import CommandError
from daemon.hotswap.source import PluginSource

if TYPE_CHECKING:
    from daemon.master.arbiter import Master

NAME = "plugin_check"


def message(path: str, code: bytes) -> dict[str, Any]:
    return {"path": path, "code": base64.b64encode(code).decode()}


async def execute(master: Master, args: dict[str, Any]) -> dict[str, Any]:

    try:
        path, code = str(args["path"]), base64.b64decode(args["code"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise CommandError("plugin_check needs path and code (base64)") from None
    return await master.plugins.check(PluginSource(path, code, hashlib.sha256(code).hexdigest()))
