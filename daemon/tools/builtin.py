"""Built-in tools worker job (echo and friends arrive with the gateway, issue #4)."""

from __future__ import annotations

from daemon.worker.runtime import Worker


async def run(worker: Worker) -> None:
    await worker.ready()
    await worker.stopping.wait()
