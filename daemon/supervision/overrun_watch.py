"""Plugin hooks that overrun their budget: interrupted, and if that fails, replaced.

Every few milliseconds the master reads each worker's call slot (ipc.call_slot).
A hook past its deadline gets SIGUSR2, which raises HookOverrun inside it: a pure-Python
loop ends there, the call is denied naming the plugin, and the worker serves on.  A hook
still running ``grace`` seconds later is in code that cannot be interrupted (C holding
the GIL, a catastrophic regex): its worker is aborted (faulthandler logs the stack) and
replaced, long before the heartbeat timeout would notice, and the call it was running
is answered -32018 instead of being handed to the replacement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from daemon.config import Settings
from daemon.ipc.call_slot import INTERRUPT_SIGNAL, Running
from daemon.supervision.worker_child import WorkerChild

log = logging.getLogger("supervisor")


class OverrunWatch:
    def __init__(self, workers: Callable[[], list[WorkerChild]], grace: float,
                 on_overrun: Callable[[WorkerChild, Running], None],
                 spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]) -> None:
        self.workers = workers
        self.grace = grace
        self.on_overrun = on_overrun  # once per overrunning hook, before it is signalled
        self.spawn = spawn
        self._told: dict[str, tuple[int, float]] = {}  # worker -> the hook last reported

    def apply(self, settings: Settings) -> list[str]:
        grace = settings.config.plugins.hook_grace_ms / 1000
        if grace == self.grace:
            return []
        self.grace = grace
        return [f"hook grace {settings.config.plugins.hook_grace_ms:g} ms"]

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        for child in self.workers():
            proc = child.proc
            if proc is None or proc.slot is None or not proc.alive or proc.hung_since:
                continue
            running = proc.slot.read()
            if not running.deadline or now <= running.deadline:
                continue
            if now > running.deadline + self.grace:
                proc.stuck_in = running.plugin or "?"
                proc.hung_since = now
                log.error("%s pid %d: plugin %s's hook is still running %.0f ms past its "
                          "budget and cannot be interrupted (C code?); SIGABRT (stack dump "
                          "follows), replacing it; call %d will not be retried", child.path(),
                          proc.pid, proc.stuck_in, (now - running.deadline) * 1000,
                          running.seq)
                self.spawn(proc.abort(child.liveness.abort_grace))
                continue
            hook = (running.seq, running.deadline)
            if self._told.get(child.id) != hook:
                self._told[child.id] = hook
                self.on_overrun(child, running)
            proc.signal(INTERRUPT_SIGNAL)  # again each turn: the handler may have declined
