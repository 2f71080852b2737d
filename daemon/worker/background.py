"""The loops a worker runs beside its job, each with one owner that waits for it.

``async with background(loop_a(), loop_b()):`` runs the loops as tasks of one
asyncio.TaskGroup while the block runs, then cancels them and waits until they are gone.
A loop that fails ends the block with its own error (let it crash: the supervisor
restarts the worker) instead of dying unseen while the worker carries on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def background(*loops: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(loop) for loop in loops]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
    except BaseExceptionGroup as errors:
        # One error (the usual case): raise it as itself, so that the runtime still
        # tells a JobExit from a crash.
        if len(errors.exceptions) == 1:
            raise errors.exceptions[0] from None
        raise


async def first_set(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    async with asyncio.TaskGroup() as group:
        waits = [group.create_task(event.wait()) for event in events]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
