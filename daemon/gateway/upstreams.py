"""Which upstream MCP servers are up, and what they offer (kept by the master).

An upstream worker reports its tools and endpoint (bus kind "tools") before READY.  Once
it is READY its tools are published to every gateway worker; when it exits they are
withdrawn at once, so calls to them answer -32015 instead of hanging.  Either way,
agents that did the handshake get notifications/tools/list_changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from daemon.protocol import jsonrpc
from daemon.supervision.bus import WorkerBus
from daemon.supervision.worker_child import WorkerChild

log = logging.getLogger("upstreams")
UPSTREAMS = "upstreams"  # bus kind, master -> gateway workers
LIST_CHANGED = jsonrpc.notification("notifications/tools/list_changed")


class UpstreamDirectory:
    def __init__(self, bus: WorkerBus, gateway_workers: Callable[[], list[WorkerChild]],
                 notify_agents: Callable[[bytes], None], target: str) -> None:
        self.bus = bus
        self.gateway_workers = gateway_workers
        self.notify_agents = notify_agents
        self.target = target  # the job that upstream workers run
        self.reported: dict[str, dict[str, Any]] = {}  # name -> endpoint, tools
        self.up: dict[str, bytes] = {}  # name -> identity of the serving incarnation
        bus.on("tools", self.on_tools)

    def on_tools(self, identity: bytes, message: dict[str, Any]) -> None:
        name = str(message.get("upstream"))
        self.reported[name] = {"endpoint": message.get("endpoint"),
                               "tools": message.get("tools") or []}

    def _name(self, child: WorkerChild) -> str | None:
        return str(child.spec.options["name"]) if child.spec.target == self.target else None

    def worker_ready(self, child: WorkerChild) -> None:
        name = self._name(child)
        if name is None:
            if child in self.gateway_workers() and child.identity is not None:
                self.bus.send(child.identity, self.state())  # a (re)started gateway worker
            return
        if name in self.reported and child.proc is not None:
            self.up[name] = child.proc.identity
            self._changed(f"upstream {name} is up with "
                          f"{len(self.reported[name]['tools'])} tools")

    def worker_gone(self, child: WorkerChild, identity: bytes) -> None:
        name = self._name(child)
        if name is not None and self.up.get(name) == identity:
            del self.up[name]
            self._changed(f"upstream {name} is down; its tools answer -32015 until it is back")

    def state(self) -> dict[str, Any]:
        return {"k": UPSTREAMS, "upstreams": {n: self.reported[n] for n in sorted(self.up)}}

    def _changed(self, why: str) -> None:
        log.info("%s", why)
        state = self.state()
        for worker in self.gateway_workers():
            if worker.identity is not None:
                self.bus.send(worker.identity, state)
        self.notify_agents(LIST_CHANGED)
