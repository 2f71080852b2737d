"""The daemon's supervision tree, built from the settings (README: "How the supervision
tree works").

    workingagents            root supervisor (one_for_one), in the master
    ├── audit                the audit log's only writer (first up, last down)
    ├── gateway              one_for_one: gateway-0 ... gateway-N-1
    └── tools                one_for_one
        └── upstream:NAME    temporary supervisor, one per upstream MCP server
            └── mcp:NAME     the worker that runs the server over stdio, or is the
                             client of an HTTP one

An upstream that keeps failing exhausts its own supervisor's intensity and stops there
(temporary: nothing above it is charged), so one broken server loses only its own tools.
It is probed again by itself (one start attempt after 1 s, 2 s, 4 s ... up to 60 s), and
`workingagents restart upstream:NAME` tries it at once.

Built-in tools (echo, sleep) run inside each gateway worker, so a call to one costs no
extra process hop.
"""

from __future__ import annotations

from typing import Any

from daemon import secret_env
from daemon.a2a.settings import worker_options as a2a_options
from daemon.config import ConfigError, Settings
from daemon.llm.settings import worker_options as llm_options
from daemon.supervision.spec import (
    Intensity,
    Liveness,
    Probe,
    Restart,
    Strategy,
    SupervisorSpec,
    WorkerSpec,
)
from daemon.supervision.spec import limits as section_limits

ROOT = "workingagents"
AUDIT = "audit"
GATEWAY = "gateway"
TOOLS = "tools"


def limits(settings: Settings) -> tuple[Intensity, Liveness]:
    return section_limits(settings.config.supervision)


def gateway_options(settings: Settings) -> dict[str, Any]:
    """What a gateway worker needs of the config (tokens stay in the master)."""
    c = settings.config
    return {"agents": {name: list(a.roles) for name, a in c.agents.items()} | {
                "admin": ["admin"]},
            "roles": {name: list(r.tools) for name, r in c.roles.items()},
            "role_resources": {name: list(r.resources) for name, r in c.roles.items()},
            "role_prompts": {name: list(r.prompts) for name, r in c.roles.items()},
            "upstreams": sorted(c.upstreams),
            "bare_upstream": next((n for n, u in c.upstreams.items() if u.prefix == ""), ""),
            "call_timeout": c.gateway.call_timeout,
            "tool_timeouts": dict(c.gateway.tool_timeouts),
            "llm": llm_options(c.llm, {name: list(r.models) for name, r in c.roles.items()},
                               c.audit.llm_content),
            "a2a": a2a_options(c.a2a, {name: list(r.peers) for name, r in c.roles.items()},
                               c.audit.a2a_content, str(settings.state_dir))}


def audit_link_options(settings: Settings) -> dict[str, Any]:
    """How a process reaches the audit log, and how long its calls may wait for it."""
    a = settings.config.audit
    return {"endpoint": settings.audit_endpoint, "fsync": a.fsync, "timeout": a.timeout,
            "buffer": a.buffer, "arguments": a.arguments}


def audit_options(settings: Settings) -> dict[str, Any]:
    a = settings.config.audit
    return {"dir": str(settings.audit_dir), "state_dir": str(settings.state_dir),
            "endpoint": settings.audit_endpoint, "fsync": a.fsync,
            "rotate_bytes": a.rotate_bytes, "rotate_seconds": a.rotate_seconds,
            "checkpoint_records": a.checkpoint_records,
            "checkpoint_seconds": a.checkpoint_seconds,
            "ship_dir": a.ship_dir, "ship_command": list(a.ship_command)}


def audit_worker(settings: Settings) -> WorkerSpec:
    # it stops last, and then writes the batch in hand and a final signed checkpoint
    return WorkerSpec(id=AUDIT, target="daemon.audit.worker:run", options=audit_options(settings),
                      shutdown=settings.config.supervision.shutdown_timeout + 5.0)


def gateway_worker(settings: Settings, index: int) -> WorkerSpec:
    # A draining worker finishes its calls, each bounded by its own timeout (a tool call's,
    # or a whole AI or agent gateway request's, its stream included): give it the longest.
    c = settings.config
    drain = max([c.gateway.call_timeout, *c.gateway.tool_timeouts.values(),
                 c.llm.request_timeout, c.a2a.request_timeout]) + c.supervision.shutdown_timeout
    return WorkerSpec(id=f"gateway-{index}", target="daemon.gateway.worker:run",
                      options={"gateway": gateway_options(settings),
                               "audit": audit_link_options(settings)}, shutdown=drain)


UPSTREAM_TARGET = "daemon.tools.upstream_worker:run"
UPSTREAM_PROBE = Probe(initial=1.0, max=60.0, reset=60.0)


def upstream_env(settings: Settings, name: str) -> dict[str, str]:
    """The server's extra environment: plain values plus its secrets, read now (at start)
    as redacted-repr Secret strings; a missing secret is a ConfigError naming key and
    secret, never a value."""
    up = settings.config.upstreams[name]
    try:
        secrets = secret_env.read_all(up.secret_env)
    except secret_env.MissingSecret as exc:
        raise ConfigError(f"{settings.source or 'built-in defaults'}: key "
                          f"upstreams.{name}.secret_env.{exc}") from None
    return {**up.env, **secrets}


def upstream_headers(settings: Settings, name: str) -> dict[str, str]:
    """An HTTP upstream's headers, read now (at start) from its secrets, like env."""
    try:
        return dict(secret_env.read_all(settings.config.upstreams[name].headers_env))
    except secret_env.MissingSecret as exc:
        raise ConfigError(f"{settings.source or 'built-in defaults'}: key "
                          f"upstreams.{name}.headers_env.{exc}") from None


def upstream_options(settings: Settings, name: str) -> dict[str, Any]:
    up = settings.config.upstreams[name]
    options: dict[str, Any] = {
        "name": name, "endpoint": f"ipc://{settings.runtime_dir}/up-{name}.sock",
        "start_timeout": settings.config.supervision.start_timeout,
        "protocol": up.protocol}
    if up.url:
        return {**options, "command": [], "url": up.url,
                "headers": upstream_headers(settings, name), "timeout": up.timeout}
    return {**options, "command": list(up.command), "env": upstream_env(settings, name),
            "cwd": up.cwd}


def upstream_subtree(settings: Settings, name: str) -> SupervisorSpec:
    intensity, liveness = limits(settings)
    worker = WorkerSpec(
        id=f"mcp:{name}", target=UPSTREAM_TARGET, options=upstream_options(settings, name),
        shutdown=settings.config.supervision.shutdown_timeout)
    return SupervisorSpec(id=f"upstream:{name}", strategy=Strategy.ONE_FOR_ONE,
                          intensity=intensity, liveness=liveness, restart=Restart.TEMPORARY,
                          probe=UPSTREAM_PROBE, children=(worker,))


def build(settings: Settings) -> SupervisorSpec:
    intensity, liveness = limits(settings)
    gateway = SupervisorSpec(
        id=GATEWAY, strategy=Strategy.ONE_FOR_ONE, intensity=intensity, liveness=liveness,
        children=tuple(gateway_worker(settings, i)
                       for i in range(settings.config.daemon.gateway_workers)),
    )
    tools = SupervisorSpec(
        id=TOOLS, strategy=Strategy.ONE_FOR_ONE, intensity=intensity, liveness=liveness,
        children=tuple(upstream_subtree(settings, name) for name in settings.config.upstreams),
    )
    return SupervisorSpec(id=ROOT, strategy=Strategy.ONE_FOR_ONE, intensity=intensity,
                          liveness=liveness, children=(audit_worker(settings), gateway, tools))
