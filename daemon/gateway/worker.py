"""Gateway worker job.

Today it is a supervised, heartbeating member of the tree that reports READY and drains on
SIGTERM.  Agent calls are routed to it by the gateway layer (issue #4), which registers its
bus handlers here.
"""

from __future__ import annotations

from daemon.worker.runtime import Worker


async def run(worker: Worker) -> None:
    await worker.ready()
    await worker.stopping.wait()
