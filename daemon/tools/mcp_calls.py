"""What the stdio and HTTP upstream clients say alike: a tool call's params, spliced from
the agent's argument bytes; paging through tools/list; an error answer as an RpcError."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from daemon import __version__
from daemon.protocol import mcp
from daemon.protocol.jsonrpc import INTERNAL_ERROR, RpcError

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


async def list_all_tools(request: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
                         ) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        result = await request("tools/list", {"cursor": cursor} if cursor else {})
        tools.extend(result.get("tools", []))
        cursor = result.get("nextCursor")
        if not cursor:
            return tools


def error_answer(err: Any) -> RpcError:
    """The ``error`` member of a server's answer, as the error the call raises."""
    if not isinstance(err, dict):
        return RpcError(INTERNAL_ERROR, f"upstream error: {err!r}")
    return RpcError(int(err.get("code", INTERNAL_ERROR)), str(err.get("message")),
                    err.get("data"))
