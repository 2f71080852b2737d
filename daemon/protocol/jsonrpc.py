"""JSON-RPC 2.0 framing, and every error code agents can see.

| code   | meaning                                              |
|--------|------------------------------------------------------|
| -32700 | parse error: not JSON, or not UTF-8                  |
| -32600 | invalid request: not a JSON-RPC 2.0 request; too big |
| -32601 | method not found                                     |
| -32602 | invalid params; unknown (or hidden) tool             |
| -32603 | internal error                                       |
| -32010 | unauthenticated: no or wrong bearer token            |
| -32013 | busy: too many calls in flight; retry later          |
| -32014 | the worker running the call crashed; outcome unknown |
| -32015 | tool unavailable: its upstream is down               |
| -32016 | timed out                                            |
| -32017 | audit unavailable (fail closed)                      |
| -32018 | this call hung or crashed its worker; not retried     |
| -32019 | the agent is quarantined (data.retry_after seconds)  |
| -32020 | header mismatch: an HTTP routing header (Mcp-Method, |
|        | Mcp-Name, MCP-Protocol-Version) disagrees with the body |
| -32022 | unsupported protocol version (MCP 2026-07-28)        |
"""

from __future__ import annotations

from typing import Any

import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNAUTHENTICATED = -32010
BUSY = -32013
WORKER_CRASHED = -32014
TOOL_UNAVAILABLE = -32015
TIMED_OUT = -32016
AUDIT_UNAVAILABLE = -32017
CALL_KILLED_WORKER = -32018
QUARANTINED = -32019
HEADER_MISMATCH = -32020  # MCP 2026-07-28 Streamable HTTP
UNSUPPORTED_PROTOCOL_VERSION = -32022

RequestId = str | int


class RpcError(Exception):
    """An error that becomes a JSON-RPC error response."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def valid_id(value: Any) -> bool:
    # JSON-RPC allows null, but MCP requires string or integer ids (and bool is not int).
    return isinstance(value, str | int) and not isinstance(value, bool)


def error(rid: RequestId | None, code: int, message: str, data: Any = None) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": body})


def result(rid: RequestId, value: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": value})


def result_raw(rid: RequestId, value: bytes) -> bytes:
    """A result whose JSON is already serialized (once: it is also digested for audit)."""
    return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (orjson.dumps(rid), value)


def notification(method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return orjson.dumps(message)
