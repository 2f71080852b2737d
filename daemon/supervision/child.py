"""What a supervisor knows of each child, worker or nested supervisor alike."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.supervision.intensity import Backoff
from daemon.supervision.spec import Liveness, Restart

if TYPE_CHECKING:
    from daemon.config import SupervisionSection
    from daemon.ipc.bus import WorkerBus
    from daemon.ipc.curve import ClientSide
    from daemon.supervision.supervisor import Supervisor

log = logging.getLogger("supervisor")


class ChildState(StrEnum):
    STARTING = "starting"  # started, not yet READY: gets no traffic
    READY = "ready"  # serving
    STOPPING = "stopping"  # SIGTERM sent / children being stopped
    BACKOFF = "backoff"  # waiting before a restart
    DOWN = "down"  # exited unexpectedly; its supervisor is deciding
    STOPPED = "stopped"  # not running, by design (stopped, or transient that finished)


class StartFailed(Exception):
    """A child could not be started or did not become READY."""


@dataclass(frozen=True)
class Exit:
    """How a child ended, as its supervisor needs it."""

    reason: str  # "exit code 3", "killed by SIGKILL", "restart intensity exceeded"
    normal: bool
    uptime: float
    generation: int  # which start of the child this exit ends
    hung: bool = False


@dataclass
class TreeContext:
    """Shared by every node of one tree: the bus, the master's identity, task ownership."""

    bus: WorkerBus
    bus_endpoint: str
    master_pid: int
    log_level: str
    on_root_failure: Callable[[str], None]
    spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
    # Traffic follows these: a worker gets calls only once READY (the readiness gate).
    on_worker_ready: Callable[[Any], None] = lambda child: None
    on_worker_gone: Callable[[Any, Any], None] = lambda child, proc: None
    # A temporary subtree stopped after giving up, or one of its probes began.
    on_subtree_change: Callable[[Any], None] = lambda supervisor: None
    # Options decided at each start rather than in the spec (plugins and their latest
    # state, for a gateway worker), merged over the spec's options.
    boot_options: Callable[[Any], dict[str, Any]] = lambda child: {}
    # Where each worker incarnation's call slot lives (ipc.call_slot); None: none.
    slot_dir: Path | None = None
    # The Curve keys workers connect to a tcp:// bus with; None on ipc://.
    bus_curve: ClientSide | None = None
    # The [supervision] section the tree's limits came from; a reload that changes it
    # retunes the tree (None: a tree built by hand, retuned at the first reload).
    supervision: SupervisionSection | None = None


class Child(ABC):
    def __init__(self, name: str, restart: Restart, liveness: Liveness,
                 parent: Supervisor | None) -> None:
        self.id = name
        self.restart = restart
        self.parent = parent
        self.state = ChildState.STOPPED
        self.generation = 0  # bumped on every start
        self.restarts = 0  # by the supervisor or by `restart NAME`
        self.crashes = 0  # exits after READY that were not asked for
        self.start_failures = 0  # exits or timeouts before READY
        self.started_at = 0.0
        self.last_exit: str | None = None
        self.backoff = Backoff(liveness)

    def path(self) -> str:
        return f"{self.parent.path()}/{self.id}" if self.parent else self.id

    def uptime(self) -> float:
        return time.monotonic() - self.started_at if self.state is ChildState.READY else 0.0

    @abstractmethod
    async def start(self) -> None:
        """Start and return once READY; raise StartFailed otherwise."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop gracefully within the shutdown timeout(s); always returns."""

    @abstractmethod
    async def replace(self) -> None:
        """Restart on request, proving the replacement READY before draining the old."""

    @abstractmethod
    def check_liveness(self, now: float) -> None:
        """Act on workers that stopped answering heartbeats."""

    @abstractmethod
    def healthy(self) -> bool:
        """Everything that should be serving is serving."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The status view of this child (and its subtree)."""
