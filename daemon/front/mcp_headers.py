"""The headers of MCP Streamable HTTP: what a client accepts, and the 2026-07-28 checks
of a request's routing headers against its body (the spec's order and error codes)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from aiohttp import web

from daemon.protocol import jsonrpc, mcp

HEADER_SESSION = "Mcp-Session-Id"
HEADER_VERSION = "MCP-Protocol-Version"
HEADER_METHOD = "Mcp-Method"
HEADER_NAME = "Mcp-Name"
ROUTING_HEADERS = (HEADER_VERSION, HEADER_METHOD, HEADER_NAME)
NAME_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
# 2026-07-28: the HTTP status of a JSON-RPC error (others: 200)
STATELESS_STATUS = {jsonrpc.PARSE_ERROR: 400, jsonrpc.INVALID_REQUEST: 400,
                    jsonrpc.INVALID_PARAMS: 400, jsonrpc.HEADER_MISMATCH: 400,
                    jsonrpc.UNSUPPORTED_PROTOCOL_VERSION: 400, jsonrpc.METHOD_NOT_FOUND: 404}
_BASE64_HEADER = re.compile(r"^=\?base64\?(.*)\?=$")


def accepts(request: web.Request) -> tuple[bool, bool]:
    """(JSON, SSE): what the client's Accept allows (no Accept: anything)."""
    accept = request.headers.get("Accept", "*/*").lower()
    wild = "*/*" in accept or "application/*" in accept
    return (wild or "application/json" in accept,
            "*/*" in accept or "text/*" in accept or "text/event-stream" in accept)


def decode_header_value(value: str | None) -> str | None:
    """An ``Mcp-Name`` value, undoing the spec's ``=?base64?…?=`` form."""
    if value is None:
        return None
    found = _BASE64_HEADER.fullmatch(value)
    if found is None:
        return value
    try:
        return base64.b64decode(found.group(1), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def stateless_refusal(request: web.Request, message: dict[str, Any],
                      params: dict[str, Any], meta: dict[str, Any] | None
                      ) -> tuple[int, str] | None:
    """The 2026-07-28 checks of a request's envelope against its headers, in the spec's
    order: the envelope (-32602), then headers that disagree with the body (-32020)."""
    if not meta or mcp.META_VERSION not in meta or mcp.META_CAPABILITIES not in meta:
        return jsonrpc.INVALID_PARAMS, ("Invalid params: params._meta must carry "
                                        f"{mcp.META_VERSION!r} and {mcp.META_CAPABILITIES!r}")
    for name in ROUTING_HEADERS:
        if len(request.headers.getall(name, ())) > 1:
            return jsonrpc.HEADER_MISMATCH, f"Header mismatch: {name} appears more than once"
    if request.headers.get(HEADER_VERSION) != meta[mcp.META_VERSION]:
        return jsonrpc.HEADER_MISMATCH, (f"Header mismatch: {HEADER_VERSION} does not match "
                                         f"params._meta[{mcp.META_VERSION!r}]")
    method = message.get("method")
    if request.headers.get(HEADER_METHOD) != method:
        return jsonrpc.HEADER_MISMATCH, (f"Header mismatch: {HEADER_METHOD} does not match "
                                         "the body's method")
    key = NAME_PARAMS.get(method) if isinstance(method, str) else None
    if key is not None and params.get(key) is not None \
            and decode_header_value(request.headers.get(HEADER_NAME)) != params[key]:
        return jsonrpc.HEADER_MISMATCH, (f"Header mismatch: {HEADER_NAME} does not match "
                                         f"params.{key}")
    return None
