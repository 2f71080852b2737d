"""A gateway worker's connections to the upstream workers that are up.

Calls go straight to the upstream worker's ROUTER (no hop through the master).  When the
master withdraws an upstream, its link closes and the calls waiting on it answer -32015
at once: the upstream went away, so their outcome is unknown.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from typing import Any

import orjson
import zmq

from daemon.protocol import jsonrpc
from daemon.protocol.jsonrpc import RpcError
from daemon.tools import builtin
from daemon.tools.registry import Progress, Tool, ToolRegistry
from daemon.transport import messages
from daemon.transport.zmq_endpoint import ZmqEndpoint

SEPARATOR = "__"


class UpstreamLinks:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.ctx = ctx
        self.links: dict[str, tuple[str, ZmqEndpoint]] = {}  # name -> endpoint, socket
        self.waiting: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self.progress: dict[int, Progress] = {}
        self._seq = itertools.count(1)

    def update(self, upstreams: dict[str, dict[str, Any]]) -> ToolRegistry:
        """Follow the master's view; returns the registry of every tool now callable."""
        for name in list(self.links):
            endpoint, link = self.links[name]
            if upstreams.get(name, {}).get("endpoint") != endpoint:
                link.close()
                del self.links[name]
                self._fail(name)
        registry = ToolRegistry()
        builtin.register(registry)
        registry.live_upstreams = set(upstreams)
        for name, info in upstreams.items():
            if name not in self.links:
                sock = self.ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(str(info["endpoint"]))
                self.links[name] = (str(info["endpoint"]), ZmqEndpoint(sock, self._on_reply))
            for tool in info.get("tools", []):
                registry.add(Tool(
                    f"{name}{SEPARATOR}{tool['name']}", str(tool.get("description", "")),
                    tool.get("inputSchema") or {"type": "object"},
                    functools.partial(self.call, name, tool["name"])))
        return registry

    async def call(self, upstream: str, tool: str, arguments: dict[str, Any],
                   progress: Progress | None = None) -> dict[str, Any]:
        entry = self.links.get(upstream)
        if entry is None:
            raise unavailable(upstream)
        link = entry[1]
        seq = next(self._seq)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[seq] = (upstream, future)
        if progress is not None:
            self.progress[seq] = progress
        link.send([messages.pack_call(seq, "", orjson.dumps({
            "name": tool, "arguments": arguments, "progress": progress is not None}))])
        try:
            body = await future
        except asyncio.CancelledError:
            link.send([messages.pack_cancel(seq)])
            raise
        finally:
            self.waiting.pop(seq, None)
            self.progress.pop(seq, None)
        if "error" in body:
            raise RpcError(int(body["error"]["code"]), str(body["error"]["message"]))
        result: dict[str, Any] = body["result"]
        return result

    def _on_reply(self, frames: list[bytes]) -> None:
        seq, raw = messages.unpack_seq(frames[-1])
        if frames[-1][:1] == messages.PROGRESS:
            report = self.progress.get(seq)
            if report is not None:
                report(orjson.loads(raw))
            return
        entry = self.waiting.get(seq)
        if entry is not None and not entry[1].done():
            entry[1].set_result(orjson.loads(raw))

    def close(self) -> None:
        for _endpoint, link in self.links.values():
            link.close()
        self.links.clear()

    def _fail(self, upstream: str) -> None:
        for name, future in self.waiting.values():
            if name == upstream and not future.done():
                future.set_exception(RpcError(jsonrpc.TOOL_UNAVAILABLE, f"Tool unavailable: "
                                              f"upstream {upstream} went down during the "
                                              "call; its outcome is unknown"))


def unavailable(upstream: str) -> RpcError:
    return RpcError(jsonrpc.TOOL_UNAVAILABLE, f"Tool unavailable: upstream {upstream} is "
                                              "down; retry later")
