"""What the stdio and HTTP upstream clients say alike: a tool call's params, spliced from
the agent's argument bytes; paging through a list; an error answer as an RpcError."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from daemon import __version__
from daemon.protocol import mcp
from daemon.protocol.jsonrpc import INTERNAL_ERROR, METHOD_NOT_FOUND, RpcError

CLIENT_INFO = {"name": "workingagents-gateway", "version": __version__}


def tool_call_params(name: str, arguments: bytes, progress_token: str | None,
                     modern: bool) -> bytes:
    """``arguments``: a JSON object's bytes, spliced in as they are."""
    meta: dict[str, Any] = {}
    if progress_token is not None:
        meta["progressToken"] = progress_token
    if modern:
        meta.update(mcp.stateless_meta(CLIENT_INFO))
    return b'{"name":%b,"arguments":%b%b}' % (
        orjson.dumps(name), arguments, b',"_meta":' + orjson.dumps(meta) if meta else b"")


async def list_all(request: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]],
                   method: str, key: str) -> list[dict[str, Any]]:
    """Every item of a paginated list (tools/list: "tools"...), cursor by cursor."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        result = await request(method, {"cursor": cursor} if cursor else {})
        found = result.get(key, [])
        if not isinstance(found, list):
            raise RpcError(INTERNAL_ERROR, f"upstream error: its {method} {key} is not a list")
        items.extend(i for i in found if isinstance(i, dict))
        cursor = result.get("nextCursor")
        if not cursor:
            return items


def modern_params(params: bytes) -> bytes:
    """A request's params with the 2026-07-28 ``_meta`` added; the agent's capabilities,
    when the gateway passed them on, stand for ours."""
    given = orjson.loads(params)
    given["_meta"] = {**mcp.stateless_meta(CLIENT_INFO), **(given.get("_meta") or {})}
    return orjson.dumps(given)


Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def discover(request: Request, protocol: str,
                   fatal: type[Exception] | tuple[()] = ()) -> dict[str, Any] | None:
    """The server's capabilities if it takes 2026-07-28 (``server/discover``), else None
    for the handshake era, as MCP clients fall back.  ``protocol``: [upstreams.NAME]
    protocol ("2025-11-25" skips the probe, "2026-07-28" refuses the fallback);
    ``fatal``: an error that is no answer (an unreachable server) and must not fall back."""
    if protocol == mcp.LATEST_HANDSHAKE:
        return None
    try:
        found = await request("server/discover", {"_meta": mcp.stateless_meta(CLIENT_INFO)})
        if mcp.STATELESS_VERSIONS[-1] in found.get("supportedVersions", []):
            return as_object(found.get("capabilities"))
    except fatal:
        raise
    except RpcError:
        pass  # a handshake-era server
    if protocol == mcp.STATELESS_VERSIONS[-1]:
        raise RpcError(INTERNAL_ERROR, f"the server does not speak MCP {protocol} "
                                       "([upstreams.NAME] protocol)")
    return None


async def initialize(request: Request,
                     notify: Callable[[str], Awaitable[None]]) -> tuple[str, dict[str, Any]]:
    """The handshake era's opening: the version and capabilities the server agreed to."""
    result = await request("initialize", {
        "protocolVersion": mcp.LATEST_HANDSHAKE, "capabilities": CLIENT_CAPABILITIES,
        "clientInfo": CLIENT_INFO})
    await notify("notifications/initialized")
    return str(result.get("protocolVersion", "")), as_object(result.get("capabilities"))


def as_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def error_answer(err: Any) -> RpcError:
    """The ``error`` member of a server's answer, as the error the call raises."""
    if not isinstance(err, dict):
        return RpcError(INTERNAL_ERROR, f"upstream error: {err!r}")
    return RpcError(int(err.get("code", INTERNAL_ERROR)), str(err.get("message")),
                    err.get("data"))


# The capabilities our client declares to a server: an agent behind the gateway may
# answer these (the gateway refuses, for the server, an agent that did not declare one)
CLIENT_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}, "url": {}},
                                       "roots": {}}
# (the server's request, the call it came with) -> the answer's members, {"result"} or
# {"error"}, as JSON bytes
Asker = Callable[[dict[str, Any], Any], Awaitable[bytes]]


def reply_to_server(rid: Any, answer: bytes) -> bytes:
    """Our response to a server's request: its id, and the answer's members spliced."""
    return b'{"jsonrpc":"2.0","id":%b,%b' % (orjson.dumps(rid), answer[1:])


async def server_request_answer(on_request: Asker | None, method: Any, params: Any,
                                route: Any) -> bytes:
    """What we answer a server's request: ping ourselves; any other goes to the agent of
    the call it came with (``route``), or is refused when no call is known."""
    if method == "ping":
        return b'{"result":{}}'
    if on_request is None or route is None:
        return orjson.dumps({"error": {
            "code": METHOD_NOT_FOUND, "message": f"the gateway cannot pass {method!s:.100} on: "
            "it did not come with a call the gateway could tell (send it on the call's "
            "stream, with one call in flight)"}})
    return await on_request({"method": method, "params": params}, route)
