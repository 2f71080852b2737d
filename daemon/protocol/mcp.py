"""The Model Context Protocol, both eras, as far as the gateway speaks it.

Handshake era (2024-11-05 ... 2025-11-25): ``initialize`` fixes the version for the
connection, then ``notifications/initialized``; ``ping``.
Stateless era (2026-07-28): no handshake; every request carries its version and the
client's capabilities in ``params._meta``; ``server/discover``; results carry
``resultType``, and list results ``ttlMs`` and ``cacheScope``.
"""

from __future__ import annotations

from typing import Any

from daemon import __version__
from daemon.protocol.jsonrpc import INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION, RpcError

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
STATELESS_VERSIONS = ("2026-07-28",)
ALL_VERSIONS = HANDSHAKE_VERSIONS + STATELESS_VERSIONS
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_TOKEN = "io.workingagents/token"
META_DENIED = "io.workingagents/denied"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"  # 2026-07-28: a request's log opt-in
META_SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"  # on subscriptions/listen frames

# 2026-07-28 over HTTP: the param a request's Mcp-Name header repeats, by method
NAMED_BY = {"tools/call": "name", "resources/read": "uri", "prompts/get": "name"}
SERVER_INFO = {"name": "workingagents", "version": __version__}
# resources/subscribe: front.resource_subs (2026-07-28: subscriptions/listen)
CAPABILITIES = {"tools": {"listChanged": True},
                "resources": {"listChanged": True, "subscribe": True},
                "prompts": {"listChanged": True}, "completions": {},
                "logging": {}}  # upstreams' log messages reach the calling agent
TOOLS_TTL_MS = 60_000
INSTRUCTIONS = ("WorkingAgents governance gateway: every tool call is checked against "
                "policy and recorded. A denied call returns isError with the reason.")


def request_version(meta: dict[str, Any] | None) -> str | None:
    """The stateless-era version a request asks for, or None for the handshake era.

    Raises -32022 for a version this server does not speak, and -32602 when a stateless
    request lacks the client capabilities the 2026-07-28 spec requires.
    """
    if not meta or META_VERSION not in meta:
        return None
    version = meta[META_VERSION]
    if version not in STATELESS_VERSIONS:
        if version in HANDSHAKE_VERSIONS:
            return None  # an old client naming its version per request: handshake rules
        raise RpcError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                       {"supported": list(ALL_VERSIONS), "requested": version})
    if not isinstance(meta.get(META_CAPABILITIES), dict):
        raise RpcError(INVALID_PARAMS, f"params._meta[{META_CAPABILITIES!r}] is required "
                                       "in protocol version 2026-07-28")
    return str(version)


def stateless_meta(client_info: dict[str, str]) -> dict[str, Any]:
    """What a 2026-07-28 client puts in every request's ``_meta``."""
    return {META_VERSION: STATELESS_VERSIONS[-1], META_CAPABILITIES: {},
            META_CLIENT_INFO: client_info}


def initialize_result(params: dict[str, Any]) -> dict[str, Any]:
    asked = params.get("protocolVersion")
    version = asked if asked in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
    return {"protocolVersion": version, "capabilities": CAPABILITIES,
            "serverInfo": SERVER_INFO, "instructions": INSTRUCTIONS}


def discover_result() -> dict[str, Any]:
    return {"resultType": "complete", "supportedVersions": list(ALL_VERSIONS),
            "capabilities": CAPABILITIES, "instructions": INSTRUCTIONS,
            "ttlMs": TOOLS_TTL_MS, "cacheScope": "public",
            "_meta": {META_SERVER_INFO: SERVER_INFO}}


def finish(result: dict[str, Any], stateless: bool, cacheable: bool = False) -> dict[str, Any]:
    """Add the stateless era's envelope fields to a result."""
    if stateless:
        # an upstream's "input_required" (a multi round-trip request) stays as it is
        result.setdefault("resultType", "complete")
        if cacheable:
            # tools/list varies with the caller's roles, so shared caches must not share it
            result["ttlMs"] = TOOLS_TTL_MS
            result["cacheScope"] = "private"
    return result


def text_result(text: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}
