"""An upstream's requests to the agent of a call (sampling, elicitation, roots/list...),
as the gateway worker relays them: upstream worker -> here -> master -> the agent, and
the agent's answer back the same way (ipc.messages: Q and R envelopes).

Each hop numbers a request its own way; here the number the master gets (``ask``) maps
back to the upstream link, its call and its own number.  The request only exists during
its call: the agent's roles allowed that call, so they allow the request too (the plugin
chain is not run on it: it is the upstream's question, not the agent's call, and its
answer goes back to the upstream that the chain already let the call reach).  Each one
leaves an audit record, kind "ask": agent, upstream, tool, method, a digest of what was
asked and of the answer, and the outcome ("ok", "error" with its code, or "abandoned"
when its call ended first).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from daemon.audit.link import AuditLink
from daemon.ipc import messages
from daemon.protocol import jsonrpc
from daemon.tools.registry import CallChannel


class _Asked(msgspec.Struct):
    method: Any = None


class _Answered(msgspec.Struct):
    error: Any = None


_read_asked = msgspec.json.Decoder(_Asked).decode
_read_answered = msgspec.json.Decoder(_Answered).decode


@dataclass(slots=True)
class Ask:
    send: Callable[[bytes], None]  # to the upstream worker that asked
    useq: int  # the upstream call it came with
    theirs: int  # the upstream worker's number for it
    upstream: str
    agent: str
    tool: str
    method: str
    digest: str
    t: float
    started: float


class AgentAsks:
    def __init__(self, audit: AuditLink | None = None, worker: str = "") -> None:
        self.audit = audit
        self.worker = worker
        self.pending: dict[int, Ask] = {}
        self._ids = itertools.count(1)

    def relay(self, upstream: str, send: Callable[[bytes], None], envelope: bytes,
              channel: CallChannel | None) -> None:
        """A Q envelope from an upstream worker: to the call's agent, via the master."""
        useq, theirs, message = messages.unpack_ask(envelope)
        try:
            method = str(_read_asked(message).method)
        except msgspec.DecodeError:
            method = "?"
        if channel is None:  # a call that streams nothing to its agent
            send(messages.pack_ask(messages.ANSWER, useq, theirs, orjson.dumps({"error": {
                "code": jsonrpc.METHOD_NOT_FOUND, "message": "this call cannot reach its "
                f"agent: {method:.100} is not passed on"}})))
            return
        ask = next(self._ids)
        self.pending[ask] = Ask(send, useq, theirs, upstream, channel.agent, channel.tool,
                                method, hashlib.sha256(message).hexdigest(), time.time(),
                                time.perf_counter())
        channel.ask(ask, message)

    def answer(self, envelope: bytes) -> None:
        """An R envelope from the master: the agent's answer (or the master's refusal)."""
        _seq, ask, answer = messages.unpack_ask(envelope)
        entry = self.pending.pop(ask, None)
        if entry is None:
            return  # its call ended: the upstream worker has answered it already
        entry.send(messages.pack_ask(messages.ANSWER, entry.useq, entry.theirs, answer))
        try:
            error = _read_answered(answer).error
        except msgspec.DecodeError:
            error = {"code": jsonrpc.INTERNAL_ERROR, "message": "malformed answer"}
        outcome: dict[str, Any] = {"status": "ok"}
        if isinstance(error, dict):
            outcome = {"status": "error", "code": error.get("code"),
                       "message": str(error.get("message"))[:200]}
        outcome["answer_sha256"] = hashlib.sha256(answer).hexdigest()
        self._record(entry, outcome)

    def call_ended(self, useq: int) -> None:
        """Its upstream call is over: what it still asks is abandoned (the upstream worker
        answers the server; the master forgets its side)."""
        for ask in [a for a, e in self.pending.items() if e.useq == useq]:
            self._record(self.pending.pop(ask), {"status": "abandoned"})

    def _record(self, entry: Ask, outcome: dict[str, Any]) -> None:
        if self.audit is None:
            return
        self.audit.submit(orjson.dumps({
            "kind": "ask", "t": entry.t, "agent": entry.agent, "tool": entry.tool,
            "upstream": entry.upstream, "method": entry.method, "worker": self.worker,
            "asked_sha256": entry.digest, "outcome": outcome,
            "ms": int((time.perf_counter() - entry.started) * 1e6) / 1000}))
