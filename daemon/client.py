"""Agent clients for the gateway, over the TCP shim or ZeroMQ, sync and asyncio.

    from daemon.client import AgentClient
    with AgentClient.tcp("127.0.0.1", 7700, token) as agent:
        print(agent.list_tools())
        print(agent.call_tool("echo", {"text": "hi"}))

    async with AsyncAgentClient.tcp("127.0.0.1", 7700, token) as agent:
        results = await asyncio.gather(*(agent.call_tool("echo", {"i": i}) for i in range(100)))

``AgentClient.zmq_curve(endpoint, server_public, public, secret)`` authenticates with a
Curve key pair instead of a token (``[listen] zmq_curve``).

Handshake era by default (``initialize`` with the token, MCP 2025-11-25); pass
``stateless=True`` to speak 2026-07-28 instead (token and version in every request's
``_meta``).  Requests may be pipelined; responses are matched by id.  A JSON-RPC error
raises ``RpcError``; a tool that ran and failed returns a result with ``isError``.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from typing import Any

import orjson
import zmq
import zmq.asyncio
import zmq.utils.monitor

from daemon.protocol import mcp
from daemon.protocol.jsonrpc import RpcError

CLIENT_INFO = {"name": "workingagents-client", "version": "1"}


class _Session:
    """What both clients share: ids, request building, response checking."""

    def __init__(self, token: str | None, stateless: bool) -> None:
        self.token = token
        self.stateless = stateless
        self._ids = itertools.count(1)
        self.notifications: list[dict[str, Any]] = []

    def build(self, method: str, params: dict[str, Any] | None = None) -> tuple[int, bytes]:
        rid = next(self._ids)
        params = dict(params or {})
        if self.stateless and method != "initialize":
            meta = {**mcp.stateless_meta(CLIENT_INFO), **(params.get("_meta") or {})}
            if self.token:
                meta.setdefault(mcp.META_TOKEN, self.token)
            params["_meta"] = meta
        return rid, orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                  "params": params})

    def initialize_params(self) -> dict[str, Any]:
        meta = {mcp.META_TOKEN: self.token} if self.token is not None else {}
        return {"protocolVersion": mcp.LATEST_HANDSHAKE, "capabilities": {},
                "clientInfo": CLIENT_INFO, "_meta": meta}

    @staticmethod
    def outcome(message: dict[str, Any]) -> dict[str, Any]:
        if "error" in message:
            err = message["error"]
            raise RpcError(err.get("code", 0), err.get("message", ""), err.get("data"))
        result: dict[str, Any] = message["result"]
        return result


class AgentClient(_Session):
    """Blocking client; one request at a time, or a pipelined batch with ``call_many``."""

    def __init__(self, sock: socket.socket | zmq.Socket[bytes], token: str | None,
                 stateless: bool, timeout: float) -> None:
        super().__init__(token, stateless)
        self.timeout = timeout
        self._sock = sock
        self._lines = sock.makefile("rb") if isinstance(sock, socket.socket) else None
        self._early: dict[int, dict[str, Any]] = {}
        if not stateless:
            self.request("initialize", self.initialize_params())
            self.notify("notifications/initialized")

    @classmethod
    def tcp(cls, host: str, port: int, token: str | None = None, stateless: bool = False,
            timeout: float = 30.0) -> AgentClient:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, token, stateless, timeout)

    @classmethod
    def zmq(cls, endpoint: str, token: str | None = None, stateless: bool = False,
            timeout: float = 30.0) -> AgentClient:
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        return cls(sock, token, stateless, timeout)

    @classmethod
    def zmq_curve(cls, endpoint: str, server_public: str | bytes, public: str | bytes,
                  secret: str | bytes, token: str | None = None, stateless: bool = False,
                  timeout: float = 30.0) -> AgentClient:
        """Connect to ``[listen] zmq_curve`` with a Curve key pair registered for an agent
        (Z85 keys); the key stands for the token.  A key the gateway does not know is
        refused at the handshake: ConnectionRefusedError, within ``timeout``."""
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        _curve_client(sock, server_public, public, secret)
        try:
            _connect_checked(sock, endpoint, timeout)
        except BaseException:
            sock.close()
            raise
        return cls(sock, token, stateless, timeout)

    def send_raw(self, raw: bytes) -> None:
        if isinstance(self._sock, socket.socket):
            self._sock.sendall(raw + b"\n")
        else:
            self._sock.send(raw)

    def recv_raw(self) -> bytes:
        if self._lines is not None:
            line = self._lines.readline()
            if not line:
                raise ConnectionError("the gateway closed the connection")
            return line.rstrip(b"\n")
        assert isinstance(self._sock, zmq.Socket)
        if not self._sock.poll(int(self.timeout * 1000)):
            raise TimeoutError(f"no answer within {self.timeout:g}s")
        return self._sock.recv()

    def _response(self, rid: int) -> dict[str, Any]:
        while rid not in self._early:
            message = orjson.loads(self.recv_raw())
            if "id" in message and message["id"] is not None:
                self._early[message["id"]] = message
            elif "method" in message:
                self.notifications.append(message)
            else:
                raise RpcError(message["error"]["code"], message["error"]["message"])
        return self._early.pop(rid)

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        rid, raw = self.build(method, params)
        self.send_raw(raw)
        return self.outcome(self._response(rid))

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send_raw(orjson.dumps(message))

    def list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = self.request("tools/list")["tools"]
        return tools

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments or {}})

    def call_many(self, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Send every call before reading any answer (pipelined); answers in call order."""
        rids = []
        for name, arguments in calls:
            rid, raw = self.build("tools/call", {"name": name, "arguments": arguments})
            self.send_raw(raw)
            rids.append(rid)
        return [self.outcome(self._response(rid)) for rid in rids]

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
        self._sock.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAgentClient(_Session):
    """asyncio client: any number of requests in flight, each awaited on its own."""

    def __init__(self, token: str | None, stateless: bool) -> None:
        super().__init__(token, stateless)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._zsock: zmq.asyncio.Socket | None = None

    @classmethod
    async def tcp(cls, host: str, port: int, token: str | None = None,
                  stateless: bool = False) -> AsyncAgentClient:
        self = cls(token, stateless)
        reader, self._writer = await asyncio.open_connection(host, port, limit=1 << 22)
        self._reader_task = asyncio.create_task(self._read_lines(reader))
        await self._start()
        return self

    @classmethod
    async def zmq(cls, endpoint: str, token: str | None = None,
                  stateless: bool = False) -> AsyncAgentClient:
        self = cls(token, stateless)
        self._zsock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self._zsock.setsockopt(zmq.LINGER, 0)
        self._zsock.connect(endpoint)
        self._reader_task = asyncio.create_task(self._read_frames())
        await self._start()
        return self

    @classmethod
    async def zmq_curve(cls, endpoint: str, server_public: str | bytes, public: str | bytes,
                        secret: str | bytes, token: str | None = None,
                        stateless: bool = False) -> AsyncAgentClient:
        """As ``AgentClient.zmq_curve`` (an unknown key is not told apart here: its
        requests time out)."""
        self = cls(token, stateless)
        self._zsock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self._zsock.setsockopt(zmq.LINGER, 0)
        _curve_client(self._zsock, server_public, public, secret)
        self._zsock.connect(endpoint)
        self._reader_task = asyncio.create_task(self._read_frames())
        await self._start()
        return self

    async def _start(self) -> None:
        if not self.stateless:
            await self.request("initialize", self.initialize_params())
            await self.send_raw(orjson.dumps({"jsonrpc": "2.0",
                                              "method": "notifications/initialized"}))

    async def send_raw(self, raw: bytes) -> None:
        if self._writer is not None:
            self._writer.write(raw + b"\n")
        elif self._zsock is not None:
            await self._zsock.send(raw)

    def _deliver(self, raw: bytes) -> None:
        message = orjson.loads(raw)
        future = self._pending.pop(message.get("id"), None) if "id" in message else None
        if future is not None and not future.done():
            future.set_result(message)
        elif "method" in message:
            self.notifications.append(message)

    async def _read_lines(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                self._deliver(line)
        finally:
            self._fail_all(ConnectionError("the gateway closed the connection"))

    async def _read_frames(self) -> None:
        assert self._zsock is not None
        try:
            while True:
                self._deliver(await self._zsock.recv())
        finally:
            self._fail_all(ConnectionError("the client was closed"))

    def _fail_all(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    async def request(self, method: str, params: dict[str, Any] | None = None,
                      timeout: float | None = 60.0) -> dict[str, Any]:
        rid, raw = self.build(method, params)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        await self.send_raw(raw)
        return self.outcome(await asyncio.wait_for(future, timeout))

    async def list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = (await self.request("tools/list"))["tools"]
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None,
                        timeout: float | None = 60.0) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": arguments or {}},
                                  timeout)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
        if self._zsock is not None:
            self._zsock.close()

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _key(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _curve_client(sock: zmq.Socket[Any], server_public: str | bytes, public: str | bytes,
                  secret: str | bytes) -> None:
    sock.setsockopt(zmq.CURVE_SERVERKEY, _key(server_public))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, _key(public))
    sock.setsockopt(zmq.CURVE_SECRETKEY, _key(secret))


_HANDSHAKE_DONE = zmq.EVENT_HANDSHAKE_SUCCEEDED
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def _connect_checked(sock: zmq.Socket[bytes], endpoint: str, timeout: float) -> None:
    """Connect and wait for the Curve handshake, so that a refused key is an error now
    rather than requests that never get an answer."""
    monitor = sock.get_monitor_socket(_HANDSHAKE_DONE | _HANDSHAKE_FAILED)
    try:
        sock.connect(endpoint)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not monitor.poll(int(left * 1000) + 1):
                break
            event = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
            if event & _HANDSHAKE_DONE:
                return
            if event & _HANDSHAKE_FAILED:
                raise ConnectionRefusedError(f"{endpoint} refused this Curve key (not "
                                             "registered for an agent, or the wrong server "
                                             "key)")
        raise TimeoutError(f"no Curve handshake with {endpoint} within {timeout:g}s")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
