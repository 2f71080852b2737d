"""Child specifications: the supervision tree described as data (OTP's child_spec).

A worker is started by importing ``target`` ("package.module:function") in a fresh
process and running it with ``options``; a supervisor is a nested SupervisorSpec.
One ``Supervisor`` class interprets both, whatever the worker does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from daemon.config import SupervisionSection

BRUTAL_KILL: Literal["brutal_kill"] = "brutal_kill"


class Restart(StrEnum):
    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit
    TEMPORARY = "temporary"  # never restarted


class Strategy(StrEnum):
    ONE_FOR_ONE = "one_for_one"  # restart the child that died
    ONE_FOR_ALL = "one_for_all"  # restart every child
    REST_FOR_ONE = "rest_for_one"  # restart it and every child started after it


@dataclass(frozen=True)
class Intensity:
    """More than ``max_restarts`` restarts within ``max_seconds``: give up and escalate."""

    max_restarts: int = 5
    max_seconds: float = 10.0


@dataclass(frozen=True)
class Liveness:
    """Readiness, heartbeat and backoff timings for the workers of one supervisor."""

    start_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    abort_grace: float = 1.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0
    backoff_reset: float = 10.0


def limits(s: SupervisionSection) -> tuple[Intensity, Liveness]:
    """The intensity and liveness a [supervision] section gives every supervisor."""
    return (
        Intensity(s.max_restarts, s.max_seconds),
        Liveness(
            start_timeout=s.start_timeout, heartbeat_interval=s.heartbeat_interval,
            heartbeat_timeout=s.heartbeat_timeout, abort_grace=s.abort_grace,
            backoff_initial=s.backoff_initial, backoff_max=s.backoff_max,
            backoff_reset=s.backoff_reset,
        ),
    )


@dataclass(frozen=True)
class Probe:
    """Half-open retry of a temporary subtree that gave up: one start attempt after
    ``initial`` seconds, then after twice as long each time it fails, up to ``max``; the
    delay goes back to ``initial`` once the subtree has stayed up ``reset`` seconds."""

    initial: float = 1.0
    max: float = 60.0
    reset: float = 60.0


@dataclass(frozen=True)
class WorkerSpec:
    id: str
    target: str  # "module:function" run in the worker process
    options: dict[str, Any] = field(default_factory=dict)  # JSON-able keyword arguments
    restart: Restart = Restart.PERMANENT
    shutdown: float | Literal["brutal_kill"] = 5.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class SupervisorSpec:
    id: str
    children: tuple[ChildSpec, ...]
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: Intensity = Intensity()
    liveness: Liveness = Liveness()
    restart: Restart = Restart.PERMANENT
    probe: Probe | None = None  # temporary only: retried by itself after it gave up

    def names(self) -> list[str]:
        """Every id in this subtree, itself first, depth first."""
        out = [self.id]
        for child in self.children:
            out.extend(child.names() if isinstance(child, SupervisorSpec) else [child.id])
        return out


ChildSpec = WorkerSpec | SupervisorSpec


def check_tree(root: SupervisorSpec) -> None:
    """Ids name children in `restart NAME` and in logs, so they must be unique."""
    seen: set[str] = set()
    for name in root.names():
        if name in seen:
            raise ValueError(f"duplicate child id in supervision tree: {name!r}")
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"child id must be non-empty without spaces: {name!r}")
        seen.add(name)
