"""A worker slot in a supervisor: the current incarnation of one WorkerSpec."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from daemon import metrics
from daemon.ipc.call_slot import CallSlot
from daemon.supervision.child import Child, ChildState, Exit, StartFailed, TreeContext
from daemon.supervision.spec import Liveness, WorkerSpec
from daemon.supervision.worker_process import WorkerProcess
from daemon.worker.runtime import WorkerBoot

if TYPE_CHECKING:
    from daemon.supervision.supervisor import Supervisor

log = logging.getLogger("supervisor")


class WorkerChild(Child):
    def __init__(self, spec: WorkerSpec, tree: TreeContext, liveness: Liveness,
                 parent: Supervisor) -> None:
        super().__init__(spec.id, spec.restart, liveness, parent)
        self.spec = spec
        self.tree = tree
        self.liveness = liveness
        self.proc: WorkerProcess | None = None
        self.incarnation = 0
        self.down_at = 0.0  # when the last unexpected exit was seen
        self.last_recovery_ms: float | None = None  # that exit -> replacement READY

    @property
    def identity(self) -> bytes | None:
        """Bus identity of the incarnation that may get traffic, or None (readiness gate)."""
        if self.state is ChildState.READY and self.proc is not None:
            return self.proc.identity
        return None

    def _spawn_process(self) -> WorkerProcess:
        self.incarnation += 1
        slot = None
        if self.tree.slot_dir is not None:
            slot = CallSlot.create(self.tree.slot_dir / f"{self.id}#{self.incarnation}")
        boot = WorkerBoot(
            name=self.id, incarnation=self.incarnation, target=self.spec.target,
            options={**self.spec.options, **self.tree.boot_options(self)},
            bus_endpoint=self.tree.bus_endpoint, bus_curve=self.tree.bus_curve,
            master_pid=self.tree.master_pid,
            heartbeat_interval=self.liveness.heartbeat_interval,
            heartbeat_timeout=self.liveness.heartbeat_timeout, log_level=self.tree.log_level,
            slot_path=str(slot.path) if slot is not None else "",
        )
        proc = WorkerProcess(boot, self._on_exit, slot)
        self.tree.bus.attach(proc)
        try:
            proc.start()
        except OSError as exc:
            self.tree.bus.detach(proc)
            if slot is not None:
                slot.close(unlink=True)
            raise StartFailed(f"cannot start a process: {exc}") from None
        return proc

    async def _until_ready(self, proc: WorkerProcess) -> None:
        """Wait for READY; on exit, timeout or cancellation the process is gone after."""
        exited = asyncio.ensure_future(proc.exited.wait())
        either: set[asyncio.Future[Any]] = {proc.ready, exited}
        try:
            await asyncio.wait(either, timeout=self.liveness.start_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            proc.kill()
            await proc.exited.wait()
            raise
        finally:
            exited.cancel()
        reported = proc.ready.done() and not proc.ready.cancelled()
        if reported and proc.exit is None:
            return
        if reported and proc.exit is not None:
            # READY and the exit reached a master that was busy (a long stall of its
            # loop) together: the incarnation is gone, and its exit was already passed
            # over as a start's, so taking it as serving would leave a dead child READY
            raise StartFailed(f"pid {proc.pid} {proc.exit.describe()} right after READY "
                              f"({proc.exit.uptime * 1000:.0f} ms after start)")
        if proc.exit is None:
            proc.kill()
            await proc.exited.wait()
            raise StartFailed(f"pid {proc.pid} sent no READY within "
                              f"{self.liveness.start_timeout:g}s; killed")
        raise StartFailed(f"pid {proc.pid} {proc.exit.describe()} before READY "
                          f"({proc.exit.uptime * 1000:.0f} ms after start)")

    async def start(self) -> None:
        self.state = ChildState.STARTING
        self.generation += 1
        proc = self.proc = self._spawn_process()
        try:
            await self._until_ready(proc)
        except BaseException:
            self.state = ChildState.STOPPED
            raise
        self._now_ready(proc, "started" if self.generation == 1 else "restarted")

    def _now_ready(self, proc: WorkerProcess, verb: str) -> None:
        self.state = ChildState.READY
        self.started_at = time.monotonic()
        since_exit = ""
        if self.down_at:
            self.last_recovery_ms = (proc.ready_at - self.down_at) * 1000
            since_exit = f" ({self.last_recovery_ms:.1f} ms after the exit)"
            self.down_at = 0.0
        log.info("%s %s: pid %d, READY in %.1f ms%s", self.path(), verb, proc.pid,
                 (proc.ready_at - proc.started_at) * 1000, since_exit)
        self.tree.on_worker_ready(self)

    async def replace(self) -> None:
        old = self.proc
        if self.state is not ChildState.READY or old is None:
            await self.start()
            return
        new = self._spawn_process()  # old keeps serving while new proves itself
        await self._until_ready(new)
        self.proc = new
        self.generation += 1
        self._now_ready(new, f"replaced pid {old.pid} with a new incarnation")
        await old.stop(self.spec.shutdown)
        log.info("%s stopped old incarnation pid %d (%s)", self.path(), old.pid,
                 old.exit.describe() if old.exit else "gone")

    def _on_exit(self, proc: WorkerProcess) -> None:
        self.tree.bus.detach(proc)
        metrics.process_dead(proc.pid)
        self.tree.on_worker_gone(self, proc)
        if proc is not self.proc or proc.exit is None:
            return  # a replaced incarnation, or one whose start is being awaited
        self.last_exit = proc.exit.describe()
        if self.state is not ChildState.READY:
            return  # asked to stop, or still starting: the waiting side handles it
        self.state = ChildState.DOWN
        self.down_at = time.monotonic()
        reason = proc.exit.describe()
        if proc.stuck_in:
            reason = f"stuck in plugin {proc.stuck_in} past its budget, {reason}"
        elif proc.hung_since:
            reason = f"no heartbeat for {self.liveness.heartbeat_timeout:g}s, {reason}"
        assert self.parent is not None
        self.parent.child_exited(self, Exit(reason, proc.exit.normal, proc.exit.uptime,
                                            self.generation, bool(proc.hung_since)))

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or not proc.alive:
            self.state = ChildState.STOPPED
            return
        self.state = ChildState.STOPPING
        await proc.stop(self.spec.shutdown)
        self.state = ChildState.STOPPED
        log.info("%s stopped (%s)", self.path(), self.last_exit)

    def check_liveness(self, now: float) -> None:
        proc = self.proc
        if (self.state is not ChildState.READY or proc is None or not proc.alive
                or proc.hung_since):
            return
        silent = now - proc.last_heartbeat
        if silent > self.liveness.heartbeat_timeout:
            proc.hung_since = now
            proc.frozen = proc.is_frozen()  # SIGSTOPped: hung, but no call's doing
            log.error("%s pid %d sent no heartbeat for %.1fs: hung; SIGABRT (stack dump "
                      "follows), SIGKILL after %gs", self.path(), proc.pid, silent,
                      self.liveness.abort_grace)
            self.tree.spawn(proc.abort(self.liveness.abort_grace))

    def healthy(self) -> bool:
        return self.state in (ChildState.READY, ChildState.STOPPED)

    def snapshot(self) -> dict[str, Any]:
        proc = self.proc
        cpu, rss = proc.usage() if proc is not None else (None, None)
        alive = proc is not None and proc.alive
        return {
            "name": self.id, "kind": "worker", "state": self.state.value,
            "pid": proc.pid if alive and proc else None, "restart": self.restart.value,
            "restarts": self.restarts, "crashes": self.crashes,
            "start_failures": self.start_failures, "uptime": round(self.uptime(), 3),
            "cpu_percent": cpu, "rss": rss, "last_exit": self.last_exit,
            "incarnation": self.incarnation, "target": self.spec.target,
            "last_recovery_ms": self.last_recovery_ms,
        }
