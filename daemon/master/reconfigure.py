"""Reload as one operation: load the config, refuse what cannot change, then let each
component apply its own part.

All or nothing: everything that can refuse (the keys marked FIXED in daemon/config.py,
plugin tables that do not fit their schemas) is checked before any component applies,
so a refused reload leaves the running config in place.  Each component's
``apply(settings)`` returns the changes it made, in words, for the CLI and the log.
systemd hears RELOADING=1 before and READY=1 after, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from daemon import config
from daemon.config import Settings
from daemon.master import fixed_settings
from daemon.supervision.sdnotify import Notifier

log = logging.getLogger("master")


class Reconfigurable(Protocol):
    def apply(self, settings: Settings) -> list[str] | Awaitable[list[str]]:
        """Take the new settings; return the changes made, or [] if its part is the same."""


class LogLevel:
    """The master's own log level (workers keep the one they started with)."""

    def apply(self, settings: Settings) -> list[str]:
        level = settings.config.daemon.log_level
        root = logging.getLogger()
        if root.level == logging.getLevelName(level.upper()):
            return []
        root.setLevel(level.upper())
        return [f"log_level {level}"]


class Reconfiguration:
    def __init__(self, settings: Settings, config_arg: str | None, notifier: Notifier,
                 checks: Callable[[], Sequence[Callable[[Settings], Awaitable[None]]]],
                 components: Callable[[], Sequence[Reconfigurable]],
                 workers: Callable[[], int]) -> None:
        self.settings = settings  # in force
        self.config_arg = config_arg
        self.notifier = notifier
        self.checks = checks  # each raises ConfigError to refuse, before anything applies
        self.components = components  # in the order they apply
        self.workers = workers
        self.reloads = 0
        self.last_reload: str | None = None
        self._lock = asyncio.Lock()

    async def reload(self) -> dict[str, Any]:
        """Re-read the config and apply it; an invalid config changes nothing."""
        async with self._lock:
            self.notifier.reloading()
            try:
                changes = await self._apply(config.load(self.config_arg))
                self.reloads += 1
                said = "; ".join(changes) or "no changes"
                self.last_reload = f"done: {said}"
                log.info("reload done: %s", said)
                return {"ok": True, "changes": changes}
            except config.ConfigError as exc:
                self.last_reload = f"refused: {exc}"
                log.error("reload refused, running config kept: %s", exc)
                return {"ok": False, "error": str(exc)}
            finally:
                self.notifier.ready(f"serving; {self.workers()} workers")

    async def _apply(self, new: Settings) -> list[str]:
        refused = fixed_settings.refusal(self.settings, new)
        if refused is not None:
            raise config.ConfigError(f"{new.source}: {refused}; restart the service")
        for check in self.checks():
            await check(new)
        self.settings = new
        changes: list[str] = []
        for component in self.components():
            said = component.apply(new)
            changes += said if isinstance(said, list) else await said
        return list(dict.fromkeys(changes))  # two components may say the same change
