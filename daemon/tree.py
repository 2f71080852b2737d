"""The daemon's supervision tree, built from the settings (DESIGN.md "The process tree").

    workingagents            root supervisor (one_for_one), in the master
    ├── gateway              one_for_one: gateway-0 ... gateway-N-1
    └── tools                one_for_one: builtin
"""

from __future__ import annotations

from daemon.config import Settings
from daemon.supervision.spec import (
    Intensity,
    Liveness,
    Strategy,
    SupervisorSpec,
    WorkerSpec,
)

ROOT = "workingagents"
GATEWAY = "gateway"
TOOLS = "tools"


def limits(settings: Settings) -> tuple[Intensity, Liveness]:
    s = settings.config.supervision
    return (
        Intensity(s.max_restarts, s.max_seconds),
        Liveness(
            start_timeout=s.start_timeout, heartbeat_interval=s.heartbeat_interval,
            heartbeat_timeout=s.heartbeat_timeout, abort_grace=s.abort_grace,
            backoff_initial=s.backoff_initial, backoff_max=s.backoff_max,
            backoff_reset=s.backoff_reset,
        ),
    )


def gateway_worker(settings: Settings, index: int) -> WorkerSpec:
    return WorkerSpec(id=f"gateway-{index}", target="daemon.gateway.worker:run",
                      shutdown=settings.config.supervision.shutdown_timeout)


def build(settings: Settings) -> SupervisorSpec:
    intensity, liveness = limits(settings)
    shutdown = settings.config.supervision.shutdown_timeout
    gateway = SupervisorSpec(
        id=GATEWAY, strategy=Strategy.ONE_FOR_ONE, intensity=intensity, liveness=liveness,
        children=tuple(gateway_worker(settings, i)
                       for i in range(settings.config.daemon.gateway_workers)),
    )
    tools = SupervisorSpec(
        id=TOOLS, strategy=Strategy.ONE_FOR_ONE, intensity=intensity, liveness=liveness,
        children=(WorkerSpec(id="builtin", target="daemon.tools.builtin:run",
                             shutdown=shutdown),),
    )
    return SupervisorSpec(id=ROOT, strategy=Strategy.ONE_FOR_ONE, intensity=intensity,
                          liveness=liveness, children=(gateway, tools))
