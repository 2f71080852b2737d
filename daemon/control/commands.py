"""The control endpoint's commands by wire name (master side only).

Kept out of the package's __init__ so that the CLI, which imports daemon.control.client,
does not import the master's supervision code with every command it runs.
"""

from __future__ import annotations

from types import ModuleType

from daemon.control import plugin_check, reload, restart, status, stop

COMMANDS: dict[str, ModuleType] = {m.NAME: m for m in (status, reload, restart, stop,
                                                        plugin_check)}
