"""subscriptions/listen (MCP 2026-07-28): how stateless-era agents learn of list changes.

A listen request's answer is a stream on the agent's connection: first
``notifications/subscriptions/acknowledged`` with the lists the gateway will report, then
one list-change notification per change, each stamped with the request's id in
``_meta["io.modelcontextprotocol/subscriptionId"]``.  It lasts until the agent cancels
the request (notifications/cancelled) or leaves.  Resource subscriptions
(``resourceSubscriptions``) are kept by front.resource_subs; the acknowledgement names
those the agent may have, and waits until their upstreams have them.
"""

from __future__ import annotations

from typing import Any

from daemon.protocol import jsonrpc, mcp
from daemon.protocol.jsonrpc import RpcError

# what a listen filter names each list notification
FILTER = {"notifications/tools/list_changed": "toolsListChanged",
          "notifications/resources/list_changed": "resourcesListChanged",
          "notifications/prompts/list_changed": "promptsListChanged"}

Streams = dict[jsonrpc.RequestId, frozenset[str]]  # a connection's: request id -> lists


def open_stream(streams: Streams, rid: jsonrpc.RequestId, params: dict[str, Any],
                limit: int) -> dict[str, bool]:
    """Record the stream; the lists it will hear of (for its acknowledgement).  Raises
    for a request that cannot open one (the caller checked that ``rid`` is not in flight
    as a call)."""
    wanted = params.get("notifications")
    if not isinstance(wanted, dict):
        raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params: subscriptions/listen needs "
                                               "a params.notifications object")
    if rid in streams:
        raise RpcError(jsonrpc.INVALID_REQUEST, f"Invalid Request: id {rid!r} is already "
                                                "in flight on this connection")
    if len(streams) >= limit:
        raise RpcError(jsonrpc.BUSY, f"Busy: this connection has {len(streams)} listen "
                                     "streams open; cancel one first")
    honored = {key: True for key in FILTER.values() if wanted.get(key) is True}
    streams[rid] = frozenset(honored)
    return honored


def acknowledgement(rid: jsonrpc.RequestId, lists: dict[str, bool],
                    resources: list[str] | None) -> bytes:
    """The stream's first frame: what it will hear of (resources: the URIs it is
    subscribed to, when it asked for some)."""
    honored: dict[str, Any] = dict(lists)
    if resources:
        honored["resourceSubscriptions"] = resources
    return jsonrpc.notification("notifications/subscriptions/acknowledged", {
        "notifications": honored, "_meta": {mcp.META_SUBSCRIPTION: rid}})


def notes_for(streams: Streams, method: str) -> list[bytes]:
    """The notification ``method`` as each stream that asked for it gets it."""
    wanted = FILTER.get(method)
    return [jsonrpc.notification(method, {"_meta": {mcp.META_SUBSCRIPTION: rid}})
            for rid, lists in streams.items() if wanted in lists]
