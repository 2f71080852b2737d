"""A raw agent connection for tests that send bytes no well-behaved client would."""

from __future__ import annotations

import socket
from typing import Any

import orjson
import zmq

from daemon.protocol import mcp
from tests.conftest import Daemon
from tests.gateway_helpers import listen, tcp_address


class RawAgent:
    def __init__(self, daemon: Daemon, transport: str = "tcp", timeout: float = 30) -> None:
        self.timeout = timeout
        self.transport = transport
        if transport == "tcp":
            self.sock: Any = socket.create_connection(tcp_address(daemon), timeout=timeout)
            self.lines = self.sock.makefile("rb")
        else:
            self.sock = zmq.Context.instance().socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(listen(daemon)["zmq"])

    def send(self, raw: bytes) -> None:
        if self.transport == "tcp":
            self.sock.sendall(raw + b"\n")
        else:
            self.sock.send(raw)

    def recv(self) -> dict[str, Any]:
        if self.transport == "tcp":
            line = self.lines.readline()
            assert line, "the gateway closed the connection"
            return orjson.loads(line)  # type: ignore[no-any-return]
        assert self.sock.poll(int(self.timeout * 1000)), "no answer in time"
        return orjson.loads(self.sock.recv())  # type: ignore[no-any-return]

    def ask(self, raw: bytes) -> dict[str, Any]:
        self.send(raw)
        return self.recv()

    def initialize(self, token: str,
                   capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.ask(request(0, "initialize", {
            "protocolVersion": mcp.LATEST_HANDSHAKE, "capabilities": capabilities or {},
            "clientInfo": {"name": "raw", "version": "1"}, "_meta": {mcp.META_TOKEN: token}}))
        self.send(orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        return answer

    def close(self) -> None:
        if self.transport == "tcp":
            self.lines.close()
        self.sock.close()

    def __enter__(self) -> RawAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(rid: Any, method: str, params: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                         "params": params or {}})


def call(rid: Any, name: str, arguments: Any = None, token: str | None = None) -> bytes:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if token is not None:
        params["_meta"] = {mcp.META_TOKEN: token}
    return request(rid, "tools/call", params)
