"""Tools as the gateway sees them: a definition (what tools/list shows) and a runner;
and the resources, resource templates and prompts its upstreams offer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# progress, total, message -> the agent's notifications/progress (None: nobody listens)
Progress = Callable[[dict[str, Any]], None]
Runner = Callable[[dict[str, Any], Progress | None], Awaitable[dict[str, Any]]]
# (upstream, method, params) -> the upstream's result: any request passed through
Requester = Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    run: Runner
    # A pure, instant function of its arguments: run in line, without a task per call.
    # Pure matters: a call whose worker died before answering may be run again.
    inline: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Awaited before the call is recorded or announced (its upstream restarts): returns
    # once the tool can run, raises RpcError if it cannot by the deadline (loop clock).
    ready: Callable[[float], Awaitable[None]] | None = None
    # An upstream's tool: (upstream, its own name there), and its definition as the
    # server listed it (title, annotations, outputSchema, icons, _meta... all kept)
    origin: tuple[str, str] | None = None
    listed: dict[str, Any] | None = None

    def definition(self) -> dict[str, Any]:
        if self.listed is not None:
            return {**self.listed, "name": self.name}
        return {"name": self.name, "description": self.description,
                "inputSchema": self.input_schema}


@dataclass(frozen=True)
class Offered:
    """A resource, resource template or prompt of one upstream, as the server listed it
    (``name``: its own name there; a prompt is listed as <upstream>__<name>)."""

    upstream: str
    name: str
    definition: dict[str, Any]
    ready: Callable[[float], Awaitable[None]] | None = None  # as Tool.ready


class ToolRegistry:
    """Every tool a gateway worker can dispatch to, sorted by name (stable lists)."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self.live_upstreams: set[str] = set()  # upstreams whose tools are in here
        self.retry_at: dict[str, float] = {}  # upstreams down -> their next try (epoch s)
        self.resources: dict[str, Offered] = {}  # uri -> the upstream that listed it
        self.templates: list[Offered] = []  # resource templates, by upstream
        self.prompts: dict[str, Offered] = {}  # <upstream>__<prompt> -> its upstream
        self.request: Requester | None = None  # passes any request to an upstream

    def add(self, tool: Tool) -> None:
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def all(self) -> list[Tool]:
        return [self._tools[name] for name in sorted(self._tools)]
