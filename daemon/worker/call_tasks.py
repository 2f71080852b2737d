"""The calls a worker is running, each its own task: started, cancelled by key, drained.

Not a TaskGroup: one call that fails must not cancel the others.  This is their owner
instead: it waits for them at the drain and logs the error of any that failed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger("worker")


class CallTasks(Generic[K]):
    def __init__(self) -> None:
        self._tasks: dict[K, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, key: K, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[key] = task
        task.add_done_callback(functools.partial(self._forget, key))

    def _forget(self, key: K, task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %r failed", key, exc_info=task.exception())

    def cancel(self, key: K) -> None:
        task = self._tasks.get(key)
        if task is not None:
            task.cancel()

    async def drain(self) -> None:
        """Wait for every call to finish (each is bounded by its own timeout)."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def cancel_all(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await self.drain()
