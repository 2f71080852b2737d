"""Which upstream MCP servers are up, and what they offer (kept by the master).

An upstream worker reports its tools and endpoint (bus kind "tools") before READY.  Every
gateway worker gets each upstream's last known tools with its state:

  up          listed and called at once
  restarting  its worker exited and its supervisor is restarting it (or probing it):
              still listed, and calls wait for it, so a restart never turns into
              -32602 and fails a call only if it is not back within the call's timeout
  down        its supervisor gave up: not listed; calls answer -32015 at once, saying
              when the next probe is (``retry_at``, epoch seconds)

Agents that did the handshake, and stateless-era agents listening (subscriptions/listen),
get notifications/tools/list_changed when the listed tools change (not for a restart that
brings back the same tools); likewise notifications/resources/list_changed and
notifications/prompts/list_changed for resources (and templates) and prompts.  An
upstream that says its lists changed while up reports them again (same path).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon import metrics
from daemon.ipc import messages
from daemon.ipc.bus import WorkerBus
from daemon.protocol import jsonrpc, uri_template
from daemon.supervision.child import ChildState
from daemon.supervision.worker_child import WorkerChild

if TYPE_CHECKING:
    from daemon.supervision.supervisor import Supervisor

log = logging.getLogger("upstreams")
# what each list notification covers, in the upstream info a gateway worker gets
LISTS = {"notifications/tools/list_changed": ("tools",),
         "notifications/resources/list_changed": ("resources", "templates"),
         "notifications/prompts/list_changed": ("prompts",)}
LIST_CHANGED = jsonrpc.notification("notifications/tools/list_changed")
UP, RESTARTING, DOWN = "up", "restarting", "down"
TOOLS_CHANGED = "notifications/tools/list_changed"


@dataclass
class Health:
    state: str
    since: float  # epoch seconds: when it came up, or when it stopped being up
    why: str = ""
    retry_at: float | None = None  # epoch seconds of the next probe (down only)


class UpstreamDirectory:
    def __init__(self, bus: WorkerBus, gateway_workers: Callable[[], list[WorkerChild]],
                 notify_agents: Callable[[bytes], None], target: str,
                 on_up: Callable[[str], None] = lambda _name: None) -> None:
        self.bus = bus
        self.on_up = on_up  # an upstream (re)started: its resource subscriptions go to it
        self.gateway_workers = gateway_workers
        self.notify_agents = notify_agents
        self.target = target  # the job that upstream workers run
        self.reported: dict[str, dict[str, Any]] = {}  # name -> endpoint, tools
        self.up: dict[str, bytes] = {}  # name -> identity of the serving incarnation
        self.health: dict[str, Health] = {}
        # per list notification: what agents were last told is listed
        self._listed: dict[str, dict[str, Any]] = {}
        bus.on(messages.UpstreamTools, self.on_tools)

    def on_tools(self, identity: bytes, message: messages.UpstreamTools) -> None:
        name = message.upstream
        self.reported[name] = {
            "endpoint": message.endpoint, "tools": message.tools,
            "resources": message.resources, "templates": message.templates,
            "prompts": message.prompts, "subscribe": message.subscribe}
        health = self.health.get(name)
        if self.up.get(name) == identity and health is not None:  # its lists changed
            self._set(name, Health(UP, health.since), f"with {len(message.tools)} tools "
                                                      "(its lists changed)")

    # -- which upstream serves a resource -----------------------------------------------

    def owner_of(self, uri: str) -> str | None:
        """The upstream that listed the resource, or else the one upstream with a
        template that matches it (as the gateway workers route a resources/read)."""
        for name, reported in sorted(self.reported.items()):
            if any(r.get("uri") == uri for r in reported.get("resources", ())):
                return name
        owners = {name for name, reported in self.reported.items()
                  for t in reported.get("templates", ())
                  if isinstance(t.get("uriTemplate"), str)
                  and uri_template.matches(t["uriTemplate"], uri)}
        return owners.pop() if len(owners) == 1 else None

    def subscribable(self, name: str) -> bool:
        return bool(self.reported.get(name, {}).get("subscribe"))

    def identity(self, name: str) -> bytes | None:
        """The serving incarnation of an upstream's worker, while it is up."""
        return self.up.get(name)

    def _name(self, child: WorkerChild) -> str | None:
        return str(child.spec.options["name"]) if child.spec.target == self.target else None

    # -- what the tree tells us ---------------------------------------------------------

    def worker_ready(self, child: WorkerChild) -> None:
        name = self._name(child)
        if name is None:
            if child in self.gateway_workers() and child.identity is not None:
                self.bus.send(child.identity, self.state())  # a (re)started gateway worker
            return
        if name in self.reported and child.proc is not None:
            self.up[name] = child.proc.identity
            self._set(name, Health(UP, time.time()),
                      f"with {len(self.reported[name]['tools'])} tools")
            self.on_up(name)

    def worker_gone(self, child: WorkerChild, identity: bytes) -> None:
        name = self._name(child)
        if name is None or self.up.get(name) != identity:
            return
        del self.up[name]
        if child.state is ChildState.STOPPING:  # stopped on purpose (shutdown)
            self._set(name, Health(DOWN, time.time(), "stopped"), "its tools answer -32015")
            return
        proc = child.proc
        why = proc.exit.describe() if proc is not None and proc.exit is not None else "exited"
        self._set(name, Health(RESTARTING, time.time(), why), "calls wait for it")

    def subtree_changed(self, subtree: Supervisor) -> None:
        """Its supervisor gave up (down until the next probe), or a probe began."""
        for worker in subtree.workers():
            name = self._name(worker)
            if name is None:
                continue
            if subtree.state is not ChildState.STOPPED:
                self._set(name, Health(RESTARTING, time.time(), f"probe {subtree.probes}"),
                          "calls wait for it")
                continue
            retry_at = None if subtree.next_probe_at is None else \
                time.time() + max(0.0, subtree.next_probe_at - time.monotonic())
            self._set(name, Health(DOWN, time.time(), subtree.last_exit or "gave up", retry_at),
                      "its tools answer -32015" + ("" if retry_at is None else
                                                   f" until the next probe, in "
                                                   f"{retry_at - time.time():.0f}s"))

    # -- what the gateway workers, agents, status and metrics are told ------------------

    def state(self) -> messages.Upstreams:
        upstreams = {}
        for name, health in sorted(self.health.items()):
            reported = self.reported.get(name, {"endpoint": None, "tools": []})
            upstreams[name] = {**reported, "state": health.state,
                               "retry_at": health.retry_at}
        return messages.Upstreams(upstreams=upstreams)

    def status(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        return {name: {"state": h.state, "since": h.since, "why": h.why,
                       "retry_in": None if h.retry_at is None else
                       round(max(0.0, h.retry_at - now), 1),
                       "tools": len(self.reported.get(name, {}).get("tools", []))}
                for name, h in sorted(self.health.items())}

    def _set(self, name: str, health: Health, detail: str) -> None:
        was = self.health.get(name)
        if was is not None and was.state != UP and health.state != UP:
            health.since = was.since  # "down since" the moment it stopped serving
        self.health[name] = health
        if health.state == UP:
            log.info("upstream %s is up %s", name, detail)
        else:
            log.info("upstream %s is %s (%s); %s", name, health.state, health.why, detail)
        metrics.upstream_up(name, health.state == UP)
        state = self.state()
        for worker in self.gateway_workers():
            if worker.identity is not None:
                self.bus.send(worker.identity, state)
        for method, keys in LISTS.items():
            listed = {n: lists for n, u in state.upstreams.items() if u["state"] != DOWN
                      and ((lists := [u.get(k, []) for k in keys]) != [[]] * len(keys)
                           or method == TOOLS_CHANGED)}  # as before: any upstream counts
            if listed != self._listed.get(method, {}):
                self._listed[method] = listed
                self.notify_agents(jsonrpc.notification(method))
