"""One incarnation of a worker process, seen from the master.

Started through a forkserver that has the worker modules preloaded, so a restart costs a
fork (milliseconds) rather than an interpreter start and imports (~70-90 ms).  Its exit is
an event: the forkserver writes the exit status to the process sentinel, and the loop
watches that fd.  Nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.context
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from daemon.ipc.call_slot import CallSlot
from daemon.ipc.messages import worker_identity
from daemon.supervision.spec import BRUTAL_KILL
from daemon.worker.runtime import EXIT_MEANINGS, WorkerBoot, describe_exit, enter

log = logging.getLogger("supervisor")

_CTX = multiprocessing.get_context("forkserver")
# Deaths that code running in the worker can cause (a fault, an abort, an exit);
# SIGKILL and SIGTERM come from outside (an operator, the OOM killer, us).
_SELF_INFLICTED = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
                             signal.SIGABRT, signal.SIGSYS, signal.SIGXCPU})
_PRELOAD = ["daemon.worker.runtime", "zmq", "uvloop", "orjson", "psutil"]


# Only the master acts on these.  Sent to its whole process group (a terminal hangup,
# `timeout`, `kill -- -PGID`), they would kill the forkserver, and with it every worker
# (their parent-death signal), or the resource tracker.  Both helpers are exec'd, so an
# ignored disposition is all they inherit; workers restore theirs when they detach.
_MASTER_ONLY_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def prepare_forkserver(targets: Iterable[str], preload: Iterable[str] = (),
                       environ: dict[str, str] | None = None) -> None:
    """Start the forkserver now, with every worker module imported once, up front, and
    the ``preload`` modules too, which read ``environ`` when the forkserver imports them
    (it inherits it; the master's own environment is left as it was)."""
    modules = dict.fromkeys(_PRELOAD + [t.partition(":")[0] for t in targets] + list(preload))
    _CTX.set_forkserver_preload(list(modules))
    from multiprocessing import forkserver

    environ = environ or {}
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _MASTER_ONLY_SIGNALS}
    os.environ.update(environ)
    try:
        forkserver.ensure_running()  # also starts the resource tracker
    finally:
        for key in environ:
            os.environ.pop(key, None)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def forkserver_helper_pids() -> set[int]:
    """Children of the master that multiprocessing reaps itself; never waitpid() them."""
    from multiprocessing import forkserver, resource_tracker

    pids = {getattr(forkserver._forkserver, "_forkserver_pid", None),
            getattr(resource_tracker._resource_tracker, "_pid", None)}
    return {p for p in pids if p}


@dataclass(frozen=True)
class ExitStatus:
    code: int  # >= 0: exit code; < 0: killed by that signal
    uptime: float  # seconds since start

    @property
    def normal(self) -> bool:
        return self.code == 0

    def describe(self) -> str:
        meaning = EXIT_MEANINGS.get(self.code)
        return describe_exit(self.code) + (f" ({meaning})" if meaning else "")


class WorkerProcess:
    """Start, readiness, heartbeat bookkeeping, signals and reaping of one process."""

    def __init__(self, boot: WorkerBoot, on_exit: Callable[[WorkerProcess], None],
                 slot: CallSlot | None = None) -> None:
        self.boot = boot
        self.slot = slot
        self.identity = worker_identity(boot.name, boot.incarnation)  # on the bus
        self.on_exit = on_exit
        self.pid = 0
        self.started_at = 0.0
        self.ready_at = 0.0
        self.last_heartbeat = 0.0
        self.hung_since = 0.0  # set when liveness gave up on it
        self.frozen = False  # it was hung because someone SIGSTOPped it: not a call's doing
        self.stuck_in: str = ""  # the plugin whose hook it was killed in, past its grace
        self.stop_requested = False
        self.culprit = 0  # the call whose code killed or hung it (see call_slot), 0: none
        self.exit: ExitStatus | None = None
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.exited = asyncio.Event()
        self._proc: multiprocessing.context.ForkServerProcess | None = None
        self._ps: psutil.Process | None = None

    @property
    def name(self) -> str:
        return f"{self.boot.name}#{self.boot.incarnation}"

    def start(self) -> None:
        proc = _CTX.Process(target=enter, args=(self.boot,), name=self.boot.name)
        self.started_at = time.monotonic()
        proc.start()
        self._proc = proc
        self.pid = proc.pid or 0
        self.last_heartbeat = time.monotonic()
        self._loop.add_reader(proc.sentinel, self._reap)

    def mark_ready(self) -> None:
        if not self.ready.done():
            self.ready_at = self.last_heartbeat = time.monotonic()
            self.ready.set_result(None)
            self.usage()  # prime CPU sampling, so the first `status` has a figure

    def _reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._loop.remove_reader(proc.sentinel)
        code = proc.exitcode  # reads the status the forkserver wrote to the sentinel
        proc.close()
        self._proc = None
        # The group may hold grandchildren (an upstream server): they go with the worker.
        self.signal_group(signal.SIGKILL)
        now = time.monotonic()
        self.exit = ExitStatus(code if code is not None else 255, now - self.started_at)
        self.culprit = self._culprit(self.exit)
        if not self.ready.done():
            self.ready.cancel()
        self.exited.set()
        try:
            self.on_exit(self)
        finally:
            if self.slot is not None:
                self.slot.close(unlink=True)

    def _culprit(self, exit: ExitStatus) -> int:
        """The call to blame for this death: the one whose code was running, when the
        death is one that code can cause.  An operator's kill -9 or SIGSTOP blames no
        call: the calls it interrupted go to the replacement."""
        running = self.slot.read().seq if self.slot is not None else 0
        if not running or self.stop_requested or self.frozen:
            return 0
        if self.stuck_in or self.hung_since:
            return running
        if exit.code < 0:
            return running if -exit.code in _SELF_INFLICTED else 0
        return running if exit.code > 0 else 0

    @property
    def alive(self) -> bool:
        return self._proc is not None

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def signal_group(self, sig: int) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        self.signal(signal.SIGKILL)  # in case it died before leaving our group

    async def stop(self, shutdown: float | str) -> None:
        """SIGTERM, wait up to ``shutdown`` seconds, then SIGKILL; always reaped."""
        if not self.alive:
            return
        self.stop_requested = True
        if shutdown == BRUTAL_KILL:
            self.kill()
        else:
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.exited.wait(), float(shutdown))
                return
            except TimeoutError:
                log.warning("%s pid %d did not stop within %.1fs of SIGTERM; SIGKILL",
                            self.boot.name, self.pid, float(shutdown))
                self.kill()
        await self.exited.wait()

    def is_frozen(self) -> bool:
        """Stopped by a signal (SIGSTOP, a debugger) rather than busy."""
        try:
            return psutil.Process(self.pid).status() in (psutil.STATUS_STOPPED,
                                                          psutil.STATUS_TRACING_STOP)
        except psutil.Error:
            return False

    async def abort(self, grace: float) -> None:
        """A hung worker: SIGABRT so faulthandler logs its stack, then SIGKILL."""
        self.signal(signal.SIGABRT)
        self.signal(signal.SIGCONT)  # a SIGSTOPped process must run to handle SIGABRT
        try:
            await asyncio.wait_for(self.exited.wait(), grace)
        except TimeoutError:
            self.kill()
            await self.exited.wait()

    def usage(self) -> tuple[float | None, int | None]:
        """(CPU % since the previous call, RSS bytes) from psutil."""
        if not self.alive:
            return None, None
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.pid)
            with self._ps.oneshot():
                return self._ps.cpu_percent(None), self._ps.memory_info().rss
        except psutil.Error:
            return None, None
