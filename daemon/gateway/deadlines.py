"""The request timeout of the calls a worker serves, on one timer for all of them.

``asyncio.timeout`` per request (a Timeout and a loop timer made, moved and cancelled
each time) was a fiftieth of a gateway worker's time.  Here a call is an entry in a dict
kept in the order the calls started, and one timer waits for the earliest deadline: most
calls end long before it, and leave by a dict delete.  On expiry the call's task is
cancelled, and ``expired`` tells the call's own CancelledError handler that the
cancellation was the timeout's (as asyncio.timeout does, by the task's cancel count).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any


class Deadlines:
    def __init__(self) -> None:
        self._calls: dict[Hashable, tuple[float, asyncio.Task[Any]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0  # when the timer fires
        self._expired: set[Hashable] = set()

    def enter(self, key: Hashable, seconds: float) -> None:
        """The current task, cancelled ``seconds`` from now unless it leaves first."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:  # not in a task: nothing to cancel (serve always runs in one)
            return
        deadline = loop.time() + seconds
        self._calls[key] = (deadline, task)
        if self._timer is None or deadline < self._at:  # (a reload shortened the timeout)
            self._arm(loop, deadline)

    def leave(self, key: Hashable) -> None:
        self._calls.pop(key, None)
        if self._expired:
            self._expired.discard(key)

    def expired(self, key: Hashable) -> bool:
        """Whether the CancelledError the call ``key`` caught is its timeout's (not its
        agent's too), once; it takes the timeout's cancellation back from the task."""
        if key not in self._expired:
            return False
        self._expired.discard(key)
        task = asyncio.current_task()
        return task is not None and task.uncancel() == 0

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest = None
        for key, (deadline, task) in list(self._calls.items()):
            if deadline <= now:
                del self._calls[key]
                self._expired.add(key)
                task.cancel()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._arm(loop, earliest)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
