"""Tools as the gateway sees them: a definition (what tools/list shows) and a runner;
and the resources, resource templates and prompts its upstreams offer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.ipc import messages
from daemon.protocol import jsonrpc
from daemon.protocol.mcp import META_LOG_LEVEL

# The levels of notifications/message, least severe first (RFC 5424, as MCP has them)
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert",
              "emergency")


class CallChannel:
    """What a running call may send its agent before the answer, on the call's stream:
    progress (under the agent's own token, if it gave one), an upstream's log messages
    (at the levels it asked for), and an upstream's requests (sampling, elicitation,
    roots/list), which the agent answers (gateway.agent_asks).  ``send`` takes a bus
    envelope for the master; ``seq`` is the master's number for the call; ``meta`` the
    request's ``_meta``.  Made for every call with effects, so it only keeps what it is
    given: what it means is worked out when something is sent."""

    __slots__ = ("agent", "meta", "send", "seq", "stateless", "trace")

    def __init__(self, send: Callable[[bytes], None], seq: int, meta: dict[str, Any],
                 stateless: bool, agent: str, trace: Any) -> None:
        self.send = send
        self.seq = seq
        self.meta = meta
        self.stateless = stateless
        self.agent = agent
        self.trace = trace  # its audit trace: ``tool`` names the call

    @property
    def token(self) -> str | int | None:
        token = self.meta.get("progressToken")
        return token if isinstance(token, str | int) and not isinstance(token, bool) \
            else None

    @property
    def wants_progress(self) -> bool:
        return self.token is not None

    @property
    def tool(self) -> str:
        return str(getattr(self.trace, "tool", None) or "")

    def __call__(self, update: dict[str, Any]) -> None:
        """progress, total, message -> the agent's notifications/progress."""
        token = self.token
        if token is not None:
            self.send(messages.pack_progress(self.seq, jsonrpc.notification(
                "notifications/progress", {**update, "progressToken": token})))

    def log(self, raw: bytes) -> None:
        """An upstream's notifications/message (whole), if the agent asked for its level:
        2026-07-28 asks per request (``_meta``; none if it did not); the handshake era
        gets all (logging/setLevel filters upstream)."""
        if self.stateless:
            wanted = self.meta.get(META_LOG_LEVEL)
            if wanted not in LOG_LEVELS:
                return
            params = orjson.loads(raw).get("params")
            level = params.get("level") if isinstance(params, dict) else None
            if level not in LOG_LEVELS or LOG_LEVELS.index(level) < LOG_LEVELS.index(wanted):
                return
        self.send(messages.pack_progress(self.seq, raw))

    def ask(self, ask: int, message: bytes) -> None:
        """An upstream's request ({method, params}) for the agent, numbered ``ask``."""
        self.send(messages.pack_ask(messages.ASK, self.seq, ask, message))


Progress = CallChannel  # what a tool's runner is given (None: an inline call)
Runner = Callable[[dict[str, Any], CallChannel | None], Awaitable[dict[str, Any]]]
# (upstream, method, params, the call's channel) -> the upstream's result: any request
# passed through
Requester = Callable[[str, str, dict[str, Any], CallChannel | None],
                     Awaitable[dict[str, Any]]]


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
