"""The gateway workers that serve agent calls (the shards), in a stable order.

The switchboard picks a worker by agent name on every call, so the list is kept rather
than recomputed.  A reload tells the running workers their new options and adds or
removes workers to match ``daemon.gateway_workers``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from daemon.config import Settings
from daemon.ipc import messages
from daemon.ipc.bus import WorkerBus
from daemon.master import tree
from daemon.supervision.supervisor import Supervisor
from daemon.supervision.worker_child import WorkerChild


class GatewayShards:
    def __init__(self, settings: Settings, bus: WorkerBus, resizable: bool) -> None:
        self.bus = bus
        self.resizable = resizable  # only the built-in tree is reshaped by a reload
        self._options: dict[str, Any] = tree.gateway_options(settings)
        self._learned: dict[str, Any] = {}  # what the master learns at run time (A2A cards)
        self._supervisor: Supervisor | None = None
        self._workers: list[WorkerChild] = []

    def workers(self) -> list[WorkerChild]:
        return self._workers

    def attach(self, root: Supervisor) -> None:
        """Find the gateway supervisor in the tree (a custom tree may have none)."""
        found = root.find(tree.GATEWAY)
        self._supervisor = found[1] if found is not None and isinstance(found[1], Supervisor) \
            else None
        self._refresh()

    def _refresh(self) -> None:
        gateway = self._supervisor
        self._workers = [c for c in gateway.children if isinstance(c, WorkerChild)] \
            if gateway is not None else []

    async def apply(self, settings: Settings) -> list[str]:
        return self._tell(settings) + await self._resize(settings)

    def _tell(self, settings: Settings) -> list[str]:
        """Running workers get the new options now; their restarts get them from the spec."""
        options = tree.gateway_options(settings)
        if options == self._options:
            return []
        self._options = options
        self._send()
        return ["agents, roles and gateway limits"]  # what the switchboard says, deduplicated

    def learned(self, key: str, value: Any) -> None:
        """Run-time knowledge the workers need (``a2a_cards``: the peers' endpoints and
        held cards), sent now and kept in their specs for restarts."""
        if self._learned.get(key) == value:
            return
        self._learned[key] = value
        self._send()

    def _send(self) -> None:
        options = {**self._options, **self._learned}
        for worker in self._workers:
            worker.spec = dataclasses.replace(worker.spec, options={**worker.spec.options,
                                                                     "gateway": options})
            identity = worker.identity
            if identity is not None:
                self.bus.send(identity, messages.Config(gateway=options))

    async def _resize(self, settings: Settings) -> list[str]:
        want, had = settings.config.daemon.gateway_workers, len(self._workers)
        gateway = self._supervisor
        if not self.resizable or want == had or gateway is None:
            return []
        try:
            for i in range(had, want):
                await gateway.add_child(tree.gateway_worker(settings, i))
            for i in reversed(range(want, had)):
                await gateway.remove_child(f"gateway-{i}")
        finally:
            self._refresh()
            if self._learned:
                self._send()  # the new workers learn what the others know
        return [f"gateway workers {had} -> {want}"]
