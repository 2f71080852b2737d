"""A gateway worker's connections to the upstream workers that are up.

Calls go straight to the upstream worker's ROUTER (no hop through the master).  When the
master says an upstream is no longer up, its link closes and the calls in flight on it
answer -32015 at once: the upstream went away, so their outcome is unknown.  While it
restarts, its tools stay in the registry with a ``ready`` step that waits for it to be up
again (see daemon/master/upstreams.py for the states).

What an upstream sends during a call goes to the call's channel (tools.registry.
CallChannel): progress, log messages, and its requests for the agent (relayed by
gateway.agent_asks).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import zmq

from daemon.gateway.agent_asks import AgentAsks
from daemon.ipc import messages
from daemon.ipc.zmq_endpoint import ZmqEndpoint
from daemon.protocol import jsonrpc
from daemon.protocol.jsonrpc import RpcError
from daemon.tools import builtin
from daemon.tools.registry import CallChannel, Offered, Tool, ToolRegistry

log = logging.getLogger("gateway")
SEPARATOR = "__"
UP, RESTARTING, DOWN = "up", "restarting", "down"  # as daemon.master.upstreams says


class UpstreamLinks:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.ctx = ctx
        self.links: dict[str, tuple[str, ZmqEndpoint]] = {}  # name -> endpoint, socket
        # seq -> upstream, the envelope that answers it, the call's channel to its agent
        self.waiting: dict[int, tuple[str, asyncio.Future[bytes], CallChannel | None]] = {}
        self.asks = AgentAsks()  # the upstreams' requests for agents (gateway sets audit)
        self._seq = itertools.count(1)
        self.states: dict[str, str] = {}  # name -> up | restarting | down
        self.retry_at: dict[str, float] = {}  # down: name -> its next probe (epoch s)
        self._changed = asyncio.Event()  # set (and replaced) on every update
        self.bare = ""  # the upstream whose tools and prompts keep their names (prefix "")

    def update(self, upstreams: dict[str, dict[str, Any]]) -> ToolRegistry:
        """Follow the master's view; returns the registry of every tool now callable."""
        for name in list(self.links):
            endpoint, link = self.links[name]
            info = upstreams.get(name, {})
            if info.get("state", UP) != UP or info.get("endpoint") != endpoint:
                link.close()
                del self.links[name]
                self._fail(name)
        registry = ToolRegistry()
        builtin.register(registry)
        registry.request = self.request
        self.states = {}
        self.retry_at = registry.retry_at
        # the bare upstream last: a name the gateway or another upstream has stays theirs
        for name, info in sorted(upstreams.items(), key=lambda item: item[0] == self.bare):
            state = self.states[name] = str(info.get("state", UP))
            if state == DOWN:
                if info.get("retry_at") is not None:
                    registry.retry_at[name] = float(info["retry_at"])
                continue
            if not info.get("endpoint"):
                continue  # restarting, but never up: no tools known yet
            registry.live_upstreams.add(name)
            if state == UP and name not in self.links:
                sock = self.ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(str(info["endpoint"]))
                self.links[name] = (str(info["endpoint"]), ZmqEndpoint(sock, self._on_reply))
            # up: no step before the call (the hot path); restarting: wait for it first
            ready = None if state == UP else functools.partial(self.until_up, name)
            named = _Names(name, name == self.bare, registry, upstreams)
            for tool in info.get("tools", []):
                exposed = named(str(tool["name"]), registry.get)
                if exposed is None:
                    continue
                registry.add(Tool(
                    exposed, str(tool.get("description", "")),
                    tool.get("inputSchema") or {"type": "object"},
                    functools.partial(self.call, name, tool["name"]), ready=ready,
                    origin=(name, tool["name"]), listed=tool))
            _catalog(registry, name, info, ready, named)
        self._changed.set()
        self._changed = asyncio.Event()
        return registry

    async def until_up(self, upstream: str, deadline: float | None) -> None:
        """Return once a restarting upstream is up again; -32015 if it gives up, or is
        not back by ``deadline`` (the event loop's clock; None: the caller's timeout)."""
        try:
            async with asyncio.timeout_at(deadline):
                while self.states.get(upstream) == RESTARTING:
                    await self._changed.wait()
        except TimeoutError:
            raise RpcError(jsonrpc.TOOL_UNAVAILABLE, f"Tool unavailable: upstream {upstream} "
                           "is restarting and was not back within the call's timeout; "
                           "retry later") from None
        if upstream not in self.links:
            raise upstream_unavailable(upstream, self.retry_at.get(upstream))

    async def call(self, upstream: str, tool: str, arguments: dict[str, Any],
                   progress: CallChannel | None = None) -> dict[str, Any]:
        entry = self.links.get(upstream)
        link = entry[1] if entry is not None else await self._link(upstream)
        seq = next(self._seq)
        # the arguments are encoded once, here: the upstream worker splices them as bytes
        return await self._exchange(upstream, link, seq, messages.pack_upstream_call(
            seq, tool, progress is not None and progress.wants_progress,
            orjson.dumps(arguments or {})), progress)

    async def request(self, upstream: str, method: str, params: dict[str, Any],
                      channel: CallChannel | None = None) -> dict[str, Any]:
        """Any other request (resources/read, prompts/get...), passed through."""
        link = await self._link(upstream)
        seq = next(self._seq)
        return await self._exchange(upstream, link, seq, messages.pack_upstream_request(
            seq, method, orjson.dumps(params)), channel)

    async def _link(self, upstream: str) -> ZmqEndpoint:
        entry = self.links.get(upstream)
        if entry is None:  # it began restarting since the call was resolved
            await self.until_up(upstream, None)
            entry = self.links[upstream]
        return entry[1]

    async def _exchange(self, upstream: str, link: ZmqEndpoint, seq: int, payload: bytes,
                        channel: CallChannel | None) -> dict[str, Any]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[seq] = (upstream, future, channel)
        link.send([payload])
        try:
            envelope = await future
        except asyncio.CancelledError:
            link.send([messages.pack_cancel(seq)])
            raise
        finally:
            self.waiting.pop(seq, None)
            if self.asks.pending:
                self.asks.call_ended(seq)
        return _result(envelope)

    def _on_reply(self, frames: list[bytes]) -> None:
        envelope = frames[-1]
        seq, raw = messages.unpack_seq(envelope)
        entry = self.waiting.get(seq)
        kind = envelope[:1]
        if kind == messages.REPLY or kind == messages.FAILED:
            if entry is not None and not entry[1].done():
                entry[1].set_result(envelope)
            return
        channel = entry[2] if entry is not None else None
        if kind == messages.PROGRESS:
            if channel is not None:
                channel(orjson.loads(raw))
        elif kind == messages.NOTE:
            if channel is not None:
                channel.log(raw)
        elif kind == messages.ASK and entry is not None:
            link = self.links.get(entry[0])
            if link is not None:
                endpoint = link[1]

                def to_upstream(answer: bytes) -> None:
                    endpoint.send([answer])
                self.asks.relay(entry[0], to_upstream, envelope, channel)

    def close(self) -> None:
        for _endpoint, link in self.links.values():
            link.close()
        self.links.clear()

    def _fail(self, upstream: str) -> None:
        for name, future, _channel in self.waiting.values():
            if name == upstream and not future.done():
                future.set_exception(RpcError(jsonrpc.TOOL_UNAVAILABLE, f"Tool unavailable: "
                                              f"upstream {upstream} went down during the "
                                              "call; its outcome is unknown"))


def _result(envelope: bytes) -> dict[str, Any]:
    """The result an upstream worker passed on as the server's bytes, parsed once (the
    plugins and the agent's era need it as a dict), or its error raised."""
    kind, body = envelope[:1], memoryview(envelope)[9:]
    if kind == messages.FAILED:
        error = orjson.loads(body)
        raise RpcError(int(error["code"]), str(error["message"]), error.get("data"))
    try:
        result = orjson.loads(body) or {}
    except orjson.JSONDecodeError as exc:
        raise RpcError(jsonrpc.INTERNAL_ERROR, f"upstream error: its result is not JSON "
                                               f"({exc})") from None
    if not isinstance(result, dict):
        raise RpcError(jsonrpc.INTERNAL_ERROR, "upstream error: its result is not an object")
    if result.get("resultType") == "complete":
        del result["resultType"]  # the gateway adds its own for its agent's era
    return result  # an "input_required" one (MRTR) goes to the agent as it is


class _Names:
    """The names an upstream's tools and prompts get: <upstream>__<name>, or for the bare
    upstream their own, unless the gateway or another upstream has that name (a built-in
    tool, an a2a__ tool, anything <upstream>__…): then it is left out, with a warning."""

    def __init__(self, upstream: str, bare: bool, registry: ToolRegistry,
                 upstreams: dict[str, Any]) -> None:
        self.upstream, self.bare = upstream, bare
        self.taken = (*(n + SEPARATOR for n in upstreams), "a2a" + SEPARATOR)

    def __call__(self, name: str, existing: Callable[[str], object | None]) -> str | None:
        if not self.bare:
            return f"{self.upstream}{SEPARATOR}{name}"
        if existing(name) is None and not name.startswith(self.taken):
            return name
        log.warning("upstream %s: %r is left out: the gateway or another upstream has "
                    "that name", self.upstream, name)
        return None


def _catalog(registry: ToolRegistry, name: str, info: dict[str, Any],
              ready: Any, named: _Names) -> None:
    """An upstream's resources (by URI), templates and prompts (<upstream>__<prompt>)."""
    for resource in info.get("resources", []):
        uri = resource.get("uri")
        if isinstance(uri, str):  # two upstreams listing one URI: the first (by name) has it
            registry.resources.setdefault(uri, Offered(name, uri, resource, ready))
    for template in info.get("templates", []):
        if isinstance(template.get("uriTemplate"), str):
            registry.templates.append(Offered(name, template["uriTemplate"], template, ready))
    for prompt in info.get("prompts", []):
        if isinstance(prompt.get("name"), str):
            exposed = named(prompt["name"], registry.prompts.get)
            if exposed is not None:
                registry.prompts[exposed] = Offered(name, prompt["name"], prompt, ready)


def upstream_unavailable(upstream: str, retry_at: float | None = None) -> RpcError:
    """-32015 for an upstream that is down; ``retry_at``: when its next probe is."""
    when = "retry later" if retry_at is None else \
        f"next try in {max(0.0, retry_at - time.time()):.0f}s"
    return RpcError(jsonrpc.TOOL_UNAVAILABLE, f"Tool unavailable: upstream {upstream} is "
                                              f"down; {when}")
