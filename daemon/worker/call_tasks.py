"""The calls a worker is running, each its own task: started, cancelled by key, drained.

Not a TaskGroup: one call that fails must not cancel the others.  This is their owner
instead: it waits for them at the drain and logs the error of any that failed.

A call that most likely finishes without waiting (an inline tool behind the plugin
chain) may be stepped by hand from inside a task that runs several of them (``step``):
a task per call was a tenth of a gateway worker's time.  Only a call that does wait
becomes a task of its own, which carries on from where it stopped.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
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

    def step(self, key: K, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` now, up to where it first waits, and from there as a task of its
        own under ``key``.  Called from inside a task, so that the call's code always
        runs in one (asyncio.timeout and current_task need it)."""
        try:
            yielded = coro.send(None)
        except StopIteration:
            return
        except Exception:
            log.exception("call %r failed", key)
            return
        self._carry(key, coro, yielded, None)

    def _carry(self, key: K, coro: Coroutine[Any, Any, None], yielded: Any,
               error: BaseException | None) -> None:
        task = asyncio.get_running_loop().create_task(_carry_on(coro, yielded, error))
        self._tasks[key] = task
        task.add_done_callback(functools.partial(self._carried, key, coro))

    def _carried(self, key: K, coro: Coroutine[Any, Any, None],
                 task: asyncio.Task[None]) -> None:
        if task.cancelled() and inspect.getcoroutinestate(coro) == inspect.CORO_SUSPENDED:
            # cancelled before its first step: the call itself has yet to hear of it
            self._carry(key, coro, None, asyncio.CancelledError())
            return
        self._forget(key, task)

    def cancel(self, key: K) -> None:
        task = self._tasks.get(key)
        if task is not None:
            task.cancel()

    async def drain(self) -> None:
        """Wait for every call to finish (each is bounded by its own timeout), and for
        those that the ones waited for started meanwhile."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def cancel_all(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await self.drain()


async def _carry_on(coro: Coroutine[Any, Any, None], yielded: Any,
                    error: BaseException | None) -> None:
    """Drive a coroutine that was started by hand (``yielded``: what its last step
    yielded; ``error``: to throw into it first) as a Task would: wait for that future,
    then resume it; a cancellation of this task is thrown into it where it waits."""
    while True:
        if error is None:
            try:
                if yielded is None:
                    await asyncio.sleep(0)  # a bare yield: give the loop a turn
                else:
                    # what a Task does with a yielded future: clear the flag, wait on it
                    yielded._asyncio_future_blocking = False
                    await yielded  # its outcome reaches the coroutine when it resumes
            except asyncio.CancelledError as exc:
                error = exc
            except Exception:  # the coroutine reads the future's error itself
                pass
        try:
            yielded = coro.send(None) if error is None else coro.throw(error)
        except StopIteration:
            return
        error = None
