"""A dual-era MCP client for an upstream server that speaks MCP over stdio.

It probes ``server/discover`` first (2026-07-28) and falls back to the ``initialize``
handshake on any error, as the SDKs do.  Request ids are its own (agents' ids never reach
an upstream), cancellations are forwarded as ``notifications/cancelled``, and progress
notifications go to a callback.  A request from the server (sampling, elicitation,
roots/list) goes to ``on_request`` with the call it came with; stdio does not say which
call that is, so it is the call in flight when there is exactly one (else the server is
told no); a log message goes to the callback the same way.  The server runs in the
worker's process group, with a parent-death signal, so it never outlives its worker.
Its stderr goes to the log, one event per line (stderr_relay).

A tool's arguments and result pass through as bytes: the arguments are spliced into the
request line, and each line the server writes is decoded only as far as matching it
needs (msgspec), its result kept as the server's bytes for the gateway to parse once.

What the server writes is bounded: a message over MAX_MESSAGE_BYTES is refused as it
streams in (the request it answered fails at once, with a log line), and lines that are
not JSON-RPC are ignored, with one log line per GARBAGE_LOG_EVERY seconds at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from daemon.protocol import mcp
from daemon.protocol.jsonrpc import INTERNAL_ERROR, TOOL_UNAVAILABLE, RpcError
from daemon.tools import stderr_relay
from daemon.tools.mcp_calls import (
    CLIENT_INFO,
    Asker,
    discover,
    error_answer,
    initialize,
    list_all,
    modern_params,
    reply_to_server,
    server_request_answer,
    tool_call_params,
)
from daemon.tools.stdout_lines import LineSplitter

log = logging.getLogger("upstream")
HANDSHAKE_TIMEOUT = 20.0
MAX_MESSAGE_BYTES = 16 << 20  # a longer message from the server is refused
READ_CHUNK = 1 << 16  # also the pipe reader's buffer limit: it holds at most twice this
GARBAGE_LOG_EVERY = 10.0  # seconds between log lines about lines that are not JSON-RPC
# The id of a reply, when it comes first (or right after "jsonrpc"), as SDKs write it.
_REPLY_ID = re.compile(rb'\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(\d+)\s*,')


class _Line(msgspec.Struct):
    """A message from the server, as far as routing it needs; a result stays bytes."""

    id: Any = msgspec.UNSET
    method: Any = msgspec.UNSET
    params: Any = None
    result: msgspec.Raw = msgspec.Raw()  # empty: no result in the message
    error: Any = msgspec.UNSET


_read_line = msgspec.json.Decoder(_Line).decode
_PRCTL = ctypes.CDLL(None).prctl  # resolved here: the child only makes one C call


def _die_with_parent() -> None:
    _PRCTL(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG, set in the child before exec


class StdioMcpClient:
    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: str | None,
                 on_notification: Callable[[dict[str, Any], Any], None] | None = None,
                 on_request: Asker | None = None) -> None:
        self.name = name
        self.command = command
        self.env = {**os.environ, **env}
        self.cwd = cwd or None
        self.on_notification = on_notification  # (message, the call it came with or None)
        self.on_request = on_request
        self.modern = False
        self.protocol = "auto"  # [upstreams.NAME] protocol: which eras the handshake tries
        self.version = ""
        self.capabilities: dict[str, Any] = {}  # what the server said it offers
        self.asked = ""  # the method of the last request() (what a start timeout names)
        self.proc: asyncio.subprocess.Process | None = None
        self.exited = asyncio.Event()
        self._ids = itertools.count(1)
        # request id -> its answer, and the call it serves (what a server request or log
        # message is routed to while it is the only one)
        self._pending: dict[int, tuple[asyncio.Future[_Line], Any]] = {}
        self._answering: set[asyncio.Task[None]] = set()  # our answers to its requests
        self._reader: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[None] | None = None
        self._garbage = 0  # lines ignored since the last log line about them
        self._garbage_logged = 0.0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env, cwd=self.cwd,
            preexec_fn=_die_with_parent, limit=READ_CHUNK)
        assert self.proc.stderr is not None
        self._stderr = asyncio.create_task(stderr_relay.relay(self.proc.stderr, self.name))
        self._reader = asyncio.create_task(self._read())
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await self._handshake()

    async def _handshake(self) -> None:
        found = await discover(self.request, self.protocol)
        if found is None:
            self.version, self.capabilities = await initialize(self.request, self.notify)
        else:
            self.modern, self.version = True, mcp.STATELESS_VERSIONS[-1]
            self.capabilities = found

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        lines = LineSplitter(MAX_MESSAGE_BYTES, self._oversized)
        try:
            while chunk := await self.proc.stdout.read(READ_CHUNK):
                for line in lines.feed(chunk):
                    self._on_line(line)
        finally:
            self.exited.set()
            for future, _route in self._pending.values():
                if not future.done():
                    future.set_exception(RpcError(
                        TOOL_UNAVAILABLE, "Tool unavailable: the upstream server exited "
                                          "during the call; its outcome is unknown"))

    def _on_line(self, line: bytes) -> None:
        try:
            message = _read_line(line)
        except msgspec.DecodeError:  # not JSON, or not an object
            if line.strip():
                self._ignored()
            return
        rid, method = message.id, message.method
        entry = self._pending.pop(rid, None) \
            if method is msgspec.UNSET and isinstance(rid, int) else None
        if entry is not None and not entry[0].done():
            entry[0].set_result(message)
        elif method is msgspec.UNSET:
            return
        elif rid is msgspec.UNSET:
            if self.on_notification:
                route = self._only_call() if method == "notifications/message" else None
                self.on_notification({"jsonrpc": "2.0", "method": method,
                                      "params": message.params}, route)
        else:
            task = asyncio.create_task(self._answer(rid, method, message.params))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    def _only_call(self) -> Any:
        """The call a server's request or log message belongs to: the one in flight."""
        routes = {id(r): r for _f, r in self._pending.values() if r is not None}
        return next(iter(routes.values())) if len(routes) == 1 else None

    async def _answer(self, rid: Any, method: Any, params: Any) -> None:
        answer = await server_request_answer(self.on_request, method, params,
                                             self._only_call())
        if not self.exited.is_set():
            with contextlib.suppress(RpcError):  # gone: nobody is left to answer
                await self._write(reply_to_server(rid, answer) + b"\n")

    def _ignored(self) -> None:
        """A line that is not a JSON-RPC object: counted, and logged now and then."""
        self._garbage += 1
        now = time.monotonic()
        if now - self._garbage_logged >= GARBAGE_LOG_EVERY:
            log.warning("upstream wrote %d lines that are not JSON-RPC objects; ignored",
                        self._garbage)
            self._garbage, self._garbage_logged = 0, now

    def _oversized(self, head: bytes) -> None:
        found = _REPLY_ID.match(head)
        entry = self._pending.pop(int(found[1]), None) if found else None
        future = entry[0] if entry is not None else None
        log.error("refused a message of over %d bytes from the upstream (%s)",
                  MAX_MESSAGE_BYTES, f"the answer to request {found[1].decode()}" if found
                  else "not a recognisable answer")
        if future is not None and not future.done():
            future.set_exception(RpcError(INTERNAL_ERROR, "upstream error: its answer is "
                                          f"over {MAX_MESSAGE_BYTES} bytes; refused"))

    async def _write(self, line: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(line)
            await self.proc.stdin.drain()
        except (RuntimeError, ConnectionError) as exc:  # uvloop: RuntimeError once closed
            raise RpcError(TOOL_UNAVAILABLE, f"Tool unavailable: the upstream server's "
                                             f"stdin is closed ({exc.__class__.__name__})") \
                from None

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._write(orjson.dumps(message) + b"\n")

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.asked = method
        if self.modern:
            params = {**params, "_meta": {**params.get("_meta", {}),
                                          **mcp.stateless_meta(CLIENT_INFO)}}
        raw = await self._exchange(method, orjson.dumps(params))
        result = orjson.loads(raw) if raw else None
        if result is not None and not isinstance(result, dict):
            raise RpcError(INTERNAL_ERROR, f"upstream error: its {method} result is not an "
                                           "object")
        return result or {}

    async def _exchange(self, method: str, params: bytes, route: Any = None) -> bytes:
        """Send a request whose ``params`` are JSON bytes; its result's bytes (b"" for
        none), or its error raised.  ``route``: the call it serves (see on_request)."""
        rid = next(self._ids)
        if self.exited.is_set():  # the reader has failed its pending calls already
            raise RpcError(TOOL_UNAVAILABLE, "Tool unavailable: the upstream server exited")
        future: asyncio.Future[_Line] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, route)
        try:
            await self._write(b'{"jsonrpc":"2.0","id":%d,"method":%b,"params":%b}\n'
                              % (rid, orjson.dumps(method), params))
            reply = await future
        except asyncio.CancelledError:
            self._pending.pop(rid, None)
            if not self.exited.is_set():
                await self.notify("notifications/cancelled", {"requestId": rid,
                                                              "reason": "cancelled"})
            raise
        if reply.error is not msgspec.UNSET:
            raise error_answer(reply.error)
        return bytes(reply.result)

    async def request_raw(self, method: str, params: bytes, route: Any = None) -> bytes:
        """Any request, its ``params`` a JSON object's bytes (sent as they are but for the
        era's ``_meta``); the result's bytes as the server wrote them (b"{}" for none)."""
        self.asked = method
        if self.modern:
            params = modern_params(params)
        return await self._exchange(method, params, route) or b"{}"

    async def list_all(self, method: str, key: str) -> list[dict[str, Any]]:
        return await list_all(self.request, method, key)

    async def list_tools(self) -> list[dict[str, Any]]:
        return await self.list_all("tools/list", "tools")

    async def call_tool(self, name: str, arguments: bytes,
                        progress_token: str | None = None, route: Any = None) -> bytes:
        """``arguments``: a JSON object's bytes, spliced in as they are; the result's
        bytes as the server wrote them (b"{}" for none)."""
        params = tool_call_params(name, arguments, progress_token, self.modern)
        return await self._exchange("tools/call", params, route) or b"{}"

    async def close(self, timeout: float = 3.0) -> None:
        for task in list(self._answering):
            task.cancel()
        await asyncio.gather(*self._answering, return_exceptions=True)
        try:
            await self._end_process(timeout)
        finally:
            await self._drain_stderr()

    async def _drain_stderr(self, timeout: float = 1.0) -> None:
        """Its last words are logged before its exit; a grandchild of the server that
        holds the pipe open does not hold us up."""
        if self._stderr is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._stderr), timeout)
        except TimeoutError:
            self._stderr.cancel()
        await asyncio.gather(self._stderr, return_exceptions=True)

    async def _end_process(self, timeout: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # stdio servers exit on EOF
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
