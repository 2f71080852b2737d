"""Control-endpoint commands, one module each: the wire message and what it does.

Each module has NAME, a docstring naming its request args and result, and
``async def execute(master, args) -> result``.  The CLI side lives in daemon/cli/.
"""

from __future__ import annotations

from types import ModuleType

from daemon.control import plugin_check, reload, restart, status, stop

COMMANDS: dict[str, ModuleType] = {m.NAME: m for m in (status, reload, restart, stop,
                                                        plugin_check)}
