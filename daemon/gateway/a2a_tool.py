"""``a2a__NAME``: each A2A peer as an MCP tool, so an agent that speaks only MCP (TCP
shim, ZeroMQ, /mcp) can delegate to another agent.

``{"message": "…"}`` becomes a SendMessage (blocking: the peer's final answer) to the
peer; the tool's result is the reply as text: a Message's parts, or a Task's artifacts
(else its status message).  The tool is a tool call like any other: the roles' ``peers``
globs decide who sees it (gateway.permissions), and the plugin chain and the audit log
see it as the tool ``a2a__NAME``.
"""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from daemon.a2a import binding
from daemon.a2a.peers import MAX_ANSWER_BYTES, PeerFailure
from daemon.protocol import mcp
from daemon.tools.registry import Progress, Tool, ToolRegistry

if TYPE_CHECKING:
    from daemon.gateway.a2a_calls import A2aCalls

PREFIX = "a2a__"  # "a2a" is a reserved upstream name: no upstream's tools look like these
SCHEMA = {"type": "object", "properties": {"message": {
    "type": "string", "description": "what to tell the agent"}}, "required": ["message"]}


def register(registry: ToolRegistry, calls: A2aCalls) -> ToolRegistry:
    for name in calls.peers:
        about = str((calls.learned.get(name) or {}).get("description") or "")
        registry.add(Tool(f"{PREFIX}{name}",
                          f"Send a message to the A2A agent {name} and get its reply"
                          + (f": {about}" if about else ""), SCHEMA,
                          functools.partial(_send, calls, name)))
    return registry


async def _send(calls: A2aCalls, name: str, arguments: dict[str, Any],
                _progress: Progress | None) -> dict[str, Any]:
    peer = calls.peers.get(name)
    message = arguments.get("message")
    if peer is None:
        return mcp.text_result(f"A2A agent {name} is no longer configured", is_error=True)
    if not isinstance(message, str):
        return mcp.text_result("arguments.message: a string is required", is_error=True)
    if peer.held:
        return mcp.text_result(f"A2A agent {name}'s card changed (skills or signature) and "
                               "is held until an admin accepts it", is_error=True)
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": binding.SEND, "params": {
        "message": {"role": "ROLE_USER", "messageId": str(uuid.uuid4()),
                    "parts": [{"text": message}]}}})
    try:
        response = await calls.client.post(peer, body, "1.0", False)
    except PeerFailure as exc:
        return mcp.text_result(f"A2A agent {name} failed: {exc}", is_error=True)
    try:
        raw = await response.content.read(MAX_ANSWER_BYTES + 1)
    finally:
        response.close()
    try:
        reply = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return mcp.text_result(f"A2A agent {name} failed: HTTP {response.status}, not a "
                               "JSON-RPC answer", is_error=True)
    if not isinstance(reply, dict):
        return mcp.text_result(f"A2A agent {name} failed: not a JSON-RPC answer",
                               is_error=True)
    if isinstance(reply.get("error"), dict):
        return mcp.text_result(f"A2A agent {name} answered an error: "
                               f"{reply['error'].get('message')}", is_error=True)
    result = reply.get("result")
    _task, _context, state = binding.named_ids(result)
    text = binding.reply_text(result)
    failed = state in ("TASK_STATE_FAILED", "TASK_STATE_REJECTED", "failed", "rejected")
    return mcp.text_result(text or f"(no text; task state {state})", is_error=failed)
