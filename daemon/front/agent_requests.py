"""The master's side of an upstream's request to an agent during a call (sampling,
elicitation, roots/list, any other server-to-client request): put to the agent on the
call's stream (a request frame on its TCP or ZeroMQ connection; an SSE event of the
POST's stream over HTTP) under an id allocated here, and its response sent back to the
gateway worker that asked (ipc.messages: Q and R).

Only a handshake-era agent that declared the matching capability at initialize is asked
(2026-07-28 has no server-to-client requests: its servers ask by ``input_required``
results, which pass through as results); any other gets nothing, and the upstream gets
-32601.  A response is taken only from the connection (or HTTP session) the request went
to; a request still unanswered when its call ends is forgotten here (the upstream worker
answers the server with an error).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from daemon.ipc import messages
from daemon.protocol import jsonrpc

if TYPE_CHECKING:
    from daemon.front.switchboard import Connection

# the capability an agent must have declared to be asked each method
CAPABILITY_OF = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
                 "roots/list": "roots"}


class _Put(NamedTuple):
    home: Connection  # the connection (or HTTP session) whose response counts
    seq: int  # the call it came with
    ask: int  # the gateway worker's number for it
    identity: bytes  # that worker's incarnation


class AgentRequests:
    def __init__(self, send_raw: Callable[[bytes, bytes], None]) -> None:
        self.send_raw = send_raw  # (worker identity, envelope)
        self.pending: dict[int, _Put] = {}  # the id the agent sees -> where it goes back
        self._ids = itertools.count(1)

    def put(self, conn: Connection, identity: bytes, envelope: bytes) -> None:
        """A Q envelope of call ``seq`` on ``conn``: to the agent, or refused."""
        seq, ask, message = messages.unpack_ask(envelope)
        try:
            method = orjson.loads(message).get("method")
        except (orjson.JSONDecodeError, AttributeError):
            method = None
        refusal = _refusal(conn.capabilities, method)
        if refusal is not None:
            self.send_raw(identity, messages.pack_ask(messages.ANSWER, seq, ask, orjson.dumps(
                {"error": {"code": jsonrpc.METHOD_NOT_FOUND, "message": refusal}})))
            return
        rid = next(self._ids)
        self.pending[rid] = _Put(conn.home, seq, ask, identity)
        conn.progress(b'{"jsonrpc":"2.0","id":%d,%b' % (rid, message[1:]))

    def answered(self, conn: Connection, message: dict[str, Any]) -> None:
        """A response from an agent: to the worker whose upstream asked."""
        rid = message.get("id")
        if not isinstance(rid, int):
            return
        put = self.pending.get(rid)
        if put is None or put.home is not conn.home:
            return  # not ours to take (another connection's, or its call is over)
        del self.pending[rid]
        if isinstance(message.get("error"), dict):
            answer: dict[str, Any] = {"error": message["error"]}
        else:
            answer = {"result": message.get("result")}
        self.send_raw(put.identity, messages.pack_ask(messages.ANSWER, put.seq, put.ask,
                                                      orjson.dumps(answer)))

    def call_over(self, seq: int) -> None:
        for rid in [r for r, p in self.pending.items() if p.seq == seq]:
            del self.pending[rid]


def _refusal(capabilities: dict[str, Any] | None, method: Any) -> str | None:
    if not isinstance(method, str):
        return "malformed request: no method"
    if capabilities is None:
        return (f"the agent cannot be asked {method:.100}: its connection takes no requests "
                "(a 2026-07-28 request, or an HTTP client that does not accept SSE)")
    needed = CAPABILITY_OF.get(method)
    if needed is not None and not isinstance(capabilities.get(needed), dict):
        return f"the agent did not declare the {needed} capability"
    return None
