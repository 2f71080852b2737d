"""The runtime of every worker process, whatever job it does.

It runs in the forked child and does what the supervisor relies on:
- own process group (the supervisor kills the group, grandchildren included);
- exit when the master dies, taking its own process group along: a thread blocked on a
  pidfd of the master sees it at once, heartbeat loss is the backup, and
  PR_SET_PDEATHSIG the last resort (it also ends a SIGSTOPped worker);
- faulthandler on, so the SIGABRT a hung worker gets puts its stack in the log;
- READY over ZeroMQ when the job says so, heartbeats while the loop turns;
- SIGTERM asks the job to finish what it has in flight and return.

A job is ``async def job(worker: WorkerHandle, **options) -> None``: it sets up, awaits
``worker.ready()``, serves until ``worker.stopping`` is set, then returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import importlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvloop
import zmq

from daemon import logs
from daemon.ipc import curve, messages
from daemon.ipc.call_slot import INTERRUPT_SIGNAL, CallSlot
from daemon.ipc.zmq_endpoint import ZmqEndpoint
from daemon.worker.background import background

log = logging.getLogger("worker")

PR_SET_PDEATHSIG = 1
# Exit codes with a meaning the supervisor's log adds (sysexits.h numbers, so that a
# job's own small codes never read as one of these).
EXIT_UPSTREAM_EXITED = 69  # the upstream server this worker runs exited
EXIT_MASTER_GONE = 70  # distinct, so the log of a surviving master could tell it apart
EXIT_MEANINGS = {EXIT_UPSTREAM_EXITED: "its upstream server exited",
                 EXIT_MASTER_GONE: "the master was gone",
                 255: "or its forkserver died"}  # multiprocessing's "no status"

Job = Callable[..., Coroutine[Any, Any, None]]
M = TypeVar("M", bound=messages.Message)


@dataclass(frozen=True)
class WorkerBoot:
    """Everything a worker process needs to start; pickled to the forkserver."""

    name: str
    incarnation: int
    target: str
    options: dict[str, Any]
    bus_endpoint: str
    master_pid: int
    heartbeat_interval: float
    heartbeat_timeout: float
    log_level: str = "info"
    env: dict[str, str] = field(default_factory=dict)
    slot_path: str = ""  # the call slot this incarnation writes (ipc.call_slot)
    bus_curve: curve.ClientSide | None = None  # keys for a tcp:// bus (ipc.curve)


class JobExit(Exception):
    """Raised by a job to end its process with ``code``, having said why in one line
    (no traceback: the reason is known)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def describe_exit(code: int) -> str:
    """A process's exit as a person would say it: "killed by SIGKILL", "exit code 3"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerHandle:
    """The handle a job gets: identity, readiness, stop request, bus messages."""

    def __init__(self, boot: WorkerBoot, endpoint: ZmqEndpoint,
                 context: zmq.Context[zmq.Socket[bytes]], slot: CallSlot | None = None) -> None:
        self.name = boot.name
        self.slot = slot  # which call runs now, for the supervisor (gateway workers)
        self.context = context  # the process's one ZeroMQ context: jobs make sockets here
        self.incarnation = boot.incarnation
        self.boot = boot
        self.stopping = asyncio.Event()
        self._endpoint = endpoint
        self._handlers: dict[type[messages.Message], Callable[[Any], None]] = {}
        self._raw: Callable[[bytes], None] | None = None

    async def ready(self) -> None:
        """Tell the supervisor this worker may be given traffic."""
        self.send(messages.Ready(pid=os.getpid()))

    def send(self, message: messages.Message) -> bool:
        return self._endpoint.send([messages.pack_message(message)])

    def send_frame(self, frame: bytes) -> bool:
        """Send a frame encoded beforehand (the heartbeat)."""
        return self._endpoint.send([frame])

    def send_raw(self, payload: bytes) -> None:
        """Queue one data-path envelope; it leaves batched at the end of this loop turn."""
        self._endpoint.send_batched(b"", payload)

    def send_raw_now(self, payload: bytes) -> None:
        """Send now, after whatever is queued (order kept): for what must arrive before
        anything else happens): with what is queued, in one frame."""
        self._endpoint.send_batched(b"", payload)
        self._endpoint.flush()

    def read_bus(self) -> None:
        """Handle what the master sent while this worker's loop was busy (a cancel for
        calls that are queued here), before the next queued call runs."""
        self._endpoint.drain()

    def on_raw(self, handler: Callable[[bytes], None]) -> None:
        """Route data-path envelopes (agent calls) to a job's handler."""
        self._raw = handler

    def on(self, kind: type[M], handler: Callable[[M], None]) -> None:
        """Route bus messages of one Struct class to a job's handler."""
        self._handlers[kind] = handler

    def dispatch(self, payload: bytes) -> None:
        """One MESSAGE envelope from the master, to the handler of its class."""
        try:
            message = messages.unpack_message(payload)
        except messages.MalformedMessage as exc:
            log.warning("ignoring malformed bus message: %s", exc)
            return
        handler = self._handlers.get(type(message))
        if handler is not None:
            handler(message)


def resolve(target: str) -> Job:
    module_name, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"worker target must be 'module:function', got {target!r}")
    job: Job = getattr(importlib.import_module(module_name), attr)
    return job


def enter(boot: WorkerBoot) -> None:
    """Process entry point (the multiprocessing target)."""
    _detach_from_master_group()
    logs.configure(boot.log_level, boot.name)
    os.environ.update(boot.env)
    faulthandler.enable(all_threads=True)
    try:
        job = resolve(boot.target)
    except Exception as exc:
        log.error("cannot load %s: %s", boot.target, exc)
        sys.exit(3)
    sys.exit(uvloop.run(_serve(boot, job)))


def _detach_from_master_group() -> None:
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the master to handle
    # Last resort; our parent is the forkserver, which exits when the master does.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The forkserver only exits once every holder of its "alive" pipe is gone; a worker
    # must not be one of them, or the PDEATHSIG above could never fire.
    with contextlib.suppress(ImportError, AttributeError, OSError):
        from multiprocessing import forkserver

        fd = forkserver._forkserver._forkserver_alive_fd  # type: ignore[attr-defined]
        if fd is not None:
            os.close(fd)
            forkserver._forkserver._forkserver_alive_fd = None  # type: ignore[attr-defined]


async def _serve(boot: WorkerBoot, job: Job) -> int:
    try:
        master_fd = os.pidfd_open(boot.master_pid)
    except ProcessLookupError:
        return EXIT_MASTER_GONE
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, messages.worker_identity(boot.name, boot.incarnation))
    sock.setsockopt(zmq.LINGER, 1000)
    if boot.bus_curve is not None:
        curve.connect_as(sock, boot.bus_curve)
    sock.connect(boot.bus_endpoint)
    last_master_hb = time.monotonic()
    worker: WorkerHandle

    def on_bus(frames: list[bytes]) -> None:
        nonlocal last_master_hb
        last_master_hb = time.monotonic()  # any message proves the master is alive
        payload = frames[-1]
        if payload == messages.HEARTBEAT_FRAME:
            return
        for envelope in messages.envelopes(payload):
            if envelope[:1] == messages.MESSAGE:
                worker.dispatch(envelope)
            elif worker._raw is not None:
                worker._raw(envelope)

    endpoint = ZmqEndpoint(sock, on_bus)
    slot = CallSlot.open(boot.slot_path) if boot.slot_path else None
    if slot is not None:  # raise HookOverrun in a hook the master says overran
        signal.signal(INTERRUPT_SIGNAL, slot.interrupt)
    worker = WorkerHandle(boot, endpoint, ctx, slot)
    threading.Thread(target=_watch_master, args=(master_fd,), name="master-watch",
                     daemon=True).start()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stopping.set)

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(boot.heartbeat_interval)
            worker.send_frame(messages.HEARTBEAT_FRAME)
            silent = time.monotonic() - last_master_hb
            if silent > 2 * boot.heartbeat_timeout:
                log.error("no word from master %d for %.1fs; exiting", boot.master_pid, silent)
                _end_process_group()

    code = 0
    try:
        async with background(heartbeat()):
            await job(worker, **boot.options)
    except JobExit as exc:
        log.error("%s", exc)
        code = exc.code
    except Exception:
        log.exception("job %s failed", boot.target)
        code = 1
    endpoint.close()
    ctx.destroy(linger=0)  # closes whatever sockets a job left open, then terminates
    return code


def _watch_master(pidfd: int) -> None:
    """Block on the master's pidfd; when the master dies, take our whole group down.

    A thread rather than the event loop, so that it also fires while the loop is stuck in
    Python code (the GIL is released to other threads every few milliseconds).
    """
    select.select([pidfd], [], [])
    _end_process_group()


def _end_process_group() -> None:
    """With the master gone nobody else will clean up: kill our group, us included."""
    try:
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(EXIT_MASTER_GONE)
