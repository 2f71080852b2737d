"""Faults at random moments (a seeded RNG picks the kind and the gap before the next).

| fault          | what it does                                                          |
|----------------|-----------------------------------------------------------------------|
| kill_gateway   | kill -9 of a gateway worker                                           |
| kill_upstream  | kill -9 of the upstream MCP server (the SDK process, a grandchild)    |
| kill_audit     | kill -9 of the audit process                                          |
| stop_gateway   | SIGSTOP of a gateway worker for longer than the heartbeat timeout     |
| swap_plugin    | a new version of the ``swapped`` plugin dropped into the plugin dir   |
| reload         | ``workingagents reload``                                              |
| poison_storm   | the bad agent pipelines calls whose plugin hook spins                 |
| kill_llm       | kill -9 of the fake LLM provider, restarted on its port 0.3-1.5 s on  |
| kill_peer      | kill -9 of the A2A peer, restarted on its port 0.3-1.5 s later        |

A fault whose target is not there at that moment (a worker mid-restart) is counted as
missed, not as injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil

from benchmarks.chaos_harness import plugin_files
from benchmarks.chaos_harness.services import OutsideServer
from benchmarks.chaos_harness.target import DaemonUnderTest
from daemon.control.status import workers_in

WEIGHTS = {"kill_gateway": 3, "kill_upstream": 2, "kill_audit": 1, "stop_gateway": 1,
           "swap_plugin": 2, "reload": 1, "poison_storm": 1}
SERVER_WEIGHTS = {"kill_llm": 1, "kill_peer": 1}  # when the harness runs those servers
DOWN_SECONDS = (0.3, 1.5)  # how long a killed outside server stays away
STOP_SECONDS = 2.0  # > heartbeat_timeout + abort_grace: the stopped worker is found hung


class Missed(Exception):
    """The fault's target was not there (e.g. a worker mid-restart)."""


class FaultInjector:
    def __init__(self, target: DaemonUnderTest, rng: random.Random, plugin_dir: Path,
                 storm: Callable[[], Awaitable[None]],
                 servers: dict[str, OutsideServer] | None = None) -> None:
        self.target = target
        self.servers = servers or {}
        self.weights = {**WEIGHTS, **(SERVER_WEIGHTS if self.servers else {})}
        self._restarting: set[str] = set()
        self.rng = rng
        self.plugin_dir = plugin_dir
        self.storm = storm
        self.swapped_version = 1
        self.injected: Counter[str] = Counter()
        self.missed: Counter[str] = Counter()
        self.problems: list[str] = []  # faults that failed in a way worth reporting
        self.timeline: list[tuple[float, str, str]] = []  # (seconds in, kind, outcome)
        self._t0 = time.monotonic()

    async def run(self, until: float, gap: tuple[float, float]) -> None:
        """Inject faults until ``until``; each runs as its own task, all awaited."""
        tasks = []
        while True:
            await asyncio.sleep(self.rng.uniform(*gap))
            if time.monotonic() >= until:
                break
            kind = self.rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
            tasks.append(asyncio.create_task(self.inject(kind)))
        await asyncio.gather(*tasks)

    async def inject(self, kind: str) -> None:
        at = round(time.monotonic() - self._t0, 2)
        try:
            detail = await getattr(self, kind)()
        except (Missed, ProcessLookupError, psutil.NoSuchProcess):
            self.missed[kind] += 1
            self.timeline.append((at, kind, "missed"))
            return
        except Exception as exc:  # a harness fault must not end the run
            self.problems.append(f"{kind}: {type(exc).__name__}: {exc}")
            self.timeline.append((at, kind, "failed"))
            return
        self.injected[kind] += 1
        self.timeline.append((at, kind, detail or "done"))

    async def _ready_pid(self, prefix: str) -> tuple[int, str]:
        """(pid, name) of a READY worker whose name starts with ``prefix``."""
        workers = workers_in((await self.target.astatus())["tree"])
        ready = [(int(w["pid"]), name) for name, w in sorted(workers.items())
                 if name.startswith(prefix) and w["state"] == "ready" and w["pid"]]
        if not ready:
            raise Missed(prefix)
        return self.rng.choice(ready)

    async def kill_gateway(self) -> str:
        pid, name = await self._ready_pid("gateway-")
        os.kill(pid, signal.SIGKILL)
        return name

    async def kill_audit(self) -> str:
        os.kill((await self._ready_pid("audit"))[0], signal.SIGKILL)
        return "audit"

    async def kill_upstream(self) -> str:
        worker = psutil.Process((await self._ready_pid("mcp:notes"))[0])
        servers = worker.children()
        if not servers:
            raise Missed("no upstream server process")
        for server in servers:
            server.kill()
        return f"pid {' '.join(str(s.pid) for s in servers)}"

    async def stop_gateway(self) -> str:
        pid, name = await self._ready_pid("gateway-")
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(STOP_SECONDS)
        finally:
            with contextlib.suppress(ProcessLookupError):  # most likely killed as hung
                os.kill(pid, signal.SIGCONT)
        return name

    async def swap_plugin(self) -> str:
        self.swapped_version += 1
        plugin_files.drop(self.plugin_dir, "swapped",
                          plugin_files.swapped_source(self.swapped_version))
        return f"v{self.swapped_version}"

    async def reload(self) -> str:
        started = time.monotonic()
        rc, out, err = await self.target.cli("reload", timeout=30)
        if rc != 0:
            self.problems.append(f"reload exited {rc}: {(out + err).strip()[:200]}")
        return f"exit {rc} after {time.monotonic() - started:.1f}s"

    async def _kill_server(self, name: str) -> str:
        if name in self._restarting:  # still away from the last kill
            raise Missed(name)
        self._restarting.add(name)
        try:
            return await self.servers[name].kill_and_restart(self.rng.uniform(*DOWN_SECONDS))
        finally:
            self._restarting.discard(name)

    async def kill_llm(self) -> str:
        return await self._kill_server("llm")

    async def kill_peer(self) -> str:
        return await self._kill_server("peer")

    async def poison_storm(self) -> str:
        await self.storm()
        return "answered"
