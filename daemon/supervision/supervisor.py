"""The one Supervisor: OTP strategies, restart types, intensity and escalation.

Workers and nested supervisors are both ``Child``ren.  Exits arrive as events
(``child_exited``) and are handled one at a time per supervisor, under its lock, by tasks
the supervisor owns; different subtrees are handled concurrently.

One addition to OTP: a temporary subtree whose spec has a ``probe`` is not left stopped
for good when it gives up.  Its parent tries it again after a capped, doubling delay,
one start attempt per probe (half-open, like a circuit breaker), until it stays up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from daemon import metrics
from daemon.supervision.child import Child, ChildState, Exit, StartFailed, TreeContext
from daemon.supervision.intensity import ProbeDelay, RestartIntensity
from daemon.supervision.spec import (
    ChildSpec,
    Intensity,
    Liveness,
    Restart,
    Strategy,
    SupervisorSpec,
    WorkerSpec,
    limits,
)
from daemon.supervision.worker_child import WorkerChild

if TYPE_CHECKING:
    from daemon.config import Settings

log = logging.getLogger("supervisor")


class IntensityExceeded(Exception):
    pass


def wants_restart(restart: Restart, normal: bool) -> bool:
    return restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and not normal)


class Supervisor(Child):
    def __init__(self, spec: SupervisorSpec, tree: TreeContext,
                 parent: Supervisor | None = None) -> None:
        super().__init__(spec.id, spec.restart, spec.liveness, parent)
        self.spec = spec
        self.tree = tree
        self.strategy = spec.strategy
        self.liveness = spec.liveness
        self.intensity = RestartIntensity(spec.intensity)
        self.probe_delay = ProbeDelay(spec.probe) if spec.probe else None
        self.next_probe_at: float | None = None  # monotonic; set while it waits for one
        self.probes = 0
        self._once = False  # a probe's start: one attempt, no retries
        self.lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.children: list[Child] = [self._build(c) for c in spec.children]

    def _build(self, spec: ChildSpec) -> Child:
        if isinstance(spec, SupervisorSpec):
            return Supervisor(spec, self.tree, self)
        return WorkerChild(spec, self.tree, self.liveness, self)

    # -- start and stop -------------------------------------------------------------

    async def start(self, once: bool = False) -> None:
        """Start the children in order, each READY before the next starts.  ``once``: a
        child that fails to start fails the whole start (a probe's single attempt)."""
        # Holding the lock queues exits of early children until the sequence is done.
        async with self.lock:
            self.state = ChildState.STARTING
            self.generation += 1
            self.intensity.reset()  # a restarted supervisor starts with a clean history
            self._once = once
            try:
                for child in list(self.children):
                    await self._start_child(child)
            except IntensityExceeded as exc:
                await self._stop_children()
                self.state = ChildState.STOPPED
                raise StartFailed(str(exc)) from None
            finally:
                self._once = False
            self.state = ChildState.READY
            self.next_probe_at = None  # revived (by hand, say): its pending probe lapses
            self.started_at = time.monotonic()

    async def _start_child(self, child: Child) -> None:
        """Start one child; retry failed starts with backoff until intensity runs out."""
        while True:
            try:
                await child.start()
                return
            except StartFailed as exc:
                if self.state in (ChildState.STOPPING, ChildState.STOPPED):
                    return
                child.start_failures += 1
                child.last_exit = f"start failed: {exc}"
                log.error("%s failed to start: %s", child.path(), exc)
                if child.restart is Restart.TEMPORARY:
                    self._retire(child)
                    return
                if self._once:
                    raise IntensityExceeded(f"{child.path()} failed to start: {exc}") from None
                self._count_restart(child, "failed to start", str(exc))
                await self._back_off(child, up_for=0.0)
                child.restarts += 1

    async def stop(self) -> None:
        """Stop the children in reverse start order; pending restarts are abandoned."""
        self.state = ChildState.STOPPING
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._stop_children()
        self.state = ChildState.STOPPED

    async def _stop_children(self) -> None:
        for child in reversed(self.children):
            await child.stop()

    # -- exits, strategies, intensity -----------------------------------------------

    def child_exited(self, child: Child, exit: Exit) -> None:
        self._own(self._handle_exit(child, exit))

    def _own(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: internal error handling a child event", self.path(),
                      exc_info=task.exception())
            self.tree.on_root_failure(f"internal error in supervisor {self.path()}")

    async def _handle_exit(self, child: Child, exit: Exit) -> None:
        async with self.lock:
            if (self.state is not ChildState.READY or child.state is not ChildState.DOWN
                    or exit.generation != child.generation):
                return  # stale: the child was stopped or restarted meanwhile
            child.last_exit = exit.reason
            if not wants_restart(child.restart, exit.normal):
                log.info("%s exited (%s) after %.1fs; %s, not restarted", child.path(),
                         exit.reason, exit.uptime, child.restart.value)
                if child.restart is Restart.TEMPORARY:
                    self._retire(child, exit.uptime)
                else:
                    child.state = ChildState.STOPPED
                return
            child.crashes += 1
            what = "hung" if exit.hung else "crashed"
            log.warning("%s %s (%s) after %.1fs; strategy %s", child.path(), what,
                        exit.reason, exit.uptime, self.strategy.value)
            try:
                self._count_restart(child, what, exit.reason)
                await self._restart(child, exit.uptime)
            except IntensityExceeded as exc:
                await self._give_up(str(exc))

    def _count_restart(self, child: Child, what: str, detail: str) -> None:
        metrics.restart(child.id)
        if self.intensity.record():
            return
        limits = self.intensity.limits
        raise IntensityExceeded(
            f"{self.path()}: restart intensity exceeded: {child.path()} {what} ({detail}); "
            f"{self.intensity.recent()} restarts in {self.intensity.window():.1f}s, "
            f"limit {limits.max_restarts} in {limits.max_seconds:g}s"
        )

    def _restart_group(self, child: Child) -> list[Child]:
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self.children)
        if self.strategy is Strategy.REST_FOR_ONE:
            return self.children[self.children.index(child):]
        return [child]

    async def _restart(self, child: Child, up_for: float) -> None:
        group = self._restart_group(child)
        for other in reversed(group):
            if other is not child:
                await other.stop()
        await self._back_off(child, up_for)
        for member in group:
            if member is not child and member.restart is Restart.TEMPORARY:
                self._remove(member, "temporary; stopped by the strategy, not restarted")
                continue
            member.restarts += 1
            await self._start_child(member)

    async def _back_off(self, child: Child, up_for: float) -> None:
        delay = child.backoff.next_delay(up_for)
        if delay > 0:
            child.state = ChildState.BACKOFF
            log.info("%s: restarting in %.2fs (backoff, streak %d)", child.path(), delay,
                     child.backoff.streak)
            await asyncio.sleep(delay)

    async def _give_up(self, reason: str) -> None:
        log.error("%s", reason)
        up_for = self.uptime()  # before the state changes, which zeroes it
        self.state = ChildState.STOPPING
        await self._stop_children()
        self.state = ChildState.DOWN
        self.last_exit = "restart intensity exceeded"
        if self.parent is None:
            self.tree.on_root_failure(reason)
            return
        log.error("%s: shut down; escalating to %s", self.path(), self.parent.path())
        self.parent.child_exited(self, Exit("restart intensity exceeded", False,
                                            up_for, self.generation))

    def _retire(self, child: Child, up_for: float = 0.0) -> None:
        """A temporary child is not restarted.  A worker leaves the tree (OTP); a subtree
        that gave up stays in sight as stopped, so that `restart NAME` can revive it, and
        is probed later if its spec says so."""
        if isinstance(child, Supervisor):
            child.state = ChildState.STOPPED
            if child.probe_delay is None:
                log.warning("%s stays stopped (temporary, not restarted): %s", child.path(),
                            child.last_exit)
            else:
                delay = child.probe_delay.next_delay(up_for)
                child.next_probe_at = due = time.monotonic() + delay
                log.warning("%s stopped (temporary, not restarted): %s; probe in %gs",
                            child.path(), child.last_exit, delay)
                self._own(self._probe(child, due))
            self.tree.on_subtree_change(child)
        else:
            self._remove(child, "temporary, not restarted")

    async def _probe(self, child: Supervisor, due: float) -> None:
        """Half-open: one start attempt; if it fails, the next probe waits twice as long."""
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        async with self.lock:
            if (child.next_probe_at != due or child.state is not ChildState.STOPPED
                    or self.state is not ChildState.READY or child not in self.children):
                return  # revived by `restart NAME` meanwhile, or this supervisor stops
            child.next_probe_at = None
            child.probes += 1
            log.info("%s: probe %d: one start attempt", child.path(), child.probes)
            child.state = ChildState.STARTING  # seen as restarting from here on
            self.tree.on_subtree_change(child)
            try:
                await child.start(once=True)
            except StartFailed as exc:
                child.last_exit = f"probe {child.probes} failed: {exc}"
                self._retire(child)
                return
            child.restarts += 1
            log.info("%s: probe %d succeeded; back in service", child.path(), child.probes)

    def _remove(self, child: Child, why: str) -> None:
        if child in self.children:
            self.children.remove(child)
            log.info("%s removed from %s (%s)", child.id, self.path(), why)

    # -- requests from the control endpoint -------------------------------------------

    async def replace(self) -> None:
        """Rolling restart of the subtree: one child at a time, each proven first.
        A subtree that is not running (it gave up) is simply started again."""
        if self.state is not ChildState.READY:
            await self.start()
            return
        for child in list(self.children):
            await self.restart_child(child)

    async def restart_child(self, child: Child) -> None:
        async with self.lock:
            await child.replace()
            child.restarts += 1

    async def add_child(self, spec: ChildSpec) -> None:
        async with self.lock:
            child = self._build(spec)
            self.children.append(child)
            await self._start_child(child)

    async def remove_child(self, name: str) -> None:
        async with self.lock:
            for child in self.children:
                if child.id == name:
                    await child.stop()
                    self._remove(child, "configuration")
                    return

    def apply(self, settings: Settings) -> list[str]:
        """A reload's [supervision] limits, for the whole tree under this supervisor."""
        section = settings.config.supervision
        if section == self.tree.supervision:
            return []
        self.tree.supervision = section
        self.retune(*limits(section))
        return ["supervision limits"]

    def retune(self, intensity: Intensity, liveness: Liveness) -> None:
        """Apply new limits from a reload to this subtree; used from the next event on."""
        self.intensity.limits = intensity
        self.liveness = liveness
        for child in self.children:
            child.backoff.liveness = liveness
            if isinstance(child, Supervisor):
                child.retune(intensity, liveness)
            elif isinstance(child, WorkerChild):
                child.liveness = liveness

    def find(self, name: str) -> tuple[Supervisor, Child] | None:
        for child in self.children:
            if child.id == name:
                return self, child
            if isinstance(child, Supervisor):
                found = child.find(name)
                if found:
                    return found
        return None

    def workers(self) -> list[WorkerChild]:
        out: list[WorkerChild] = []
        for child in self.children:
            if isinstance(child, Supervisor):
                out.extend(child.workers())
            elif isinstance(child, WorkerChild):
                out.append(child)
        return out

    # -- liveness and status --------------------------------------------------------

    def check_liveness(self, now: float) -> None:
        for child in self.children:
            child.check_liveness(now)

    def healthy(self) -> bool:
        # A temporary subtree that gave up is stopped by design: status shows it, but it
        # must not stop the watchdog (systemd would restart everyone for one upstream).
        # Nor must one of its probes (a single start attempt) while it runs.
        if self.parent is not None and (self.state is ChildState.STOPPED or self._once):
            return True
        return self.state is ChildState.READY and all(c.healthy() for c in self.children)

    def snapshot(self) -> dict[str, Any]:
        limits = self.intensity.limits
        return {
            "name": self.id, "kind": "supervisor", "state": self.state.value,
            "strategy": self.strategy.value, "restart": self.restart.value,
            "restarts": self.restarts, "uptime": round(self.uptime(), 3),
            "intensity": {"recent": self.intensity.recent(),
                          "max_restarts": limits.max_restarts,
                          "max_seconds": limits.max_seconds},
            "last_exit": self.last_exit,
            "next_probe": None if self.next_probe_at is None else
            round(max(0.0, self.next_probe_at - time.monotonic()), 1),
            "children": [c.snapshot() for c in self.children],
        }


def worker_specs(spec: SupervisorSpec) -> list[WorkerSpec]:
    out: list[WorkerSpec] = []
    for child in spec.children:
        out.extend(worker_specs(child) if isinstance(child, SupervisorSpec) else [child])
    return out
