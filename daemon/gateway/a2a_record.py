"""The audit record of one A2A request through the agent gateway, written when it ends
(a stream too: its end waits for the record, like a tool call's answer).

    {"kind": "a2a", "agent", "peer", "method", "task", "context", "states",
     "decisions", "outcome", "ms", "worker", + content as [audit] a2a_content says}

``states`` lists the task states the answer reported, in order (a stream's every state
change).  Content: "digest" keeps sha256 and size of the request's params and of the
reply's part texts; "full" keeps them as they left the gateway (after the guardrails:
what a guardrail redacted is recorded redacted); "none" keeps neither.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from daemon.gateway.call_record import _ms
from daemon.gateway.plugin_chain import Trail, entries


class A2aTrace:
    __slots__ = ("agent", "content", "context", "kept", "method", "outcome", "params",
                 "peer", "reply", "started", "states", "streaming", "t", "task", "trail",
                 "worker")

    def __init__(self, worker: str, agent: str, peer: str, content: str) -> None:
        self.worker = worker
        self.agent = agent
        self.peer = peer
        self.content = content
        self.method: str | None = None
        self.t = time.time()
        self.started = time.perf_counter()
        self.params: Any = None  # the request's params as the agent sent them
        self.kept: Any = None  # ... as the guardrails let them out, when they rewrote them
        self.task: str | None = None
        self.context: str | None = None
        self.states: list[str] = []
        self.reply: list[str] = []  # the part texts the agent got
        self.trail: Trail = []
        self.outcome: dict[str, Any] = {"status": "ok"}
        self.streaming = False  # an SSE head went out: the answer can only be an event now

    def saw(self, task: str | None, context: str | None, state: str | None) -> None:
        self.task = self.task or task
        self.context = self.context or context
        if state and (not self.states or self.states[-1] != state):
            self.states.append(state)

    def record(self) -> bytes:
        record: dict[str, Any] = {"kind": "a2a", "t": self.t, "agent": self.agent,
                                  "peer": self.peer, "method": self.method,
                                  "worker": self.worker}
        if self.task:
            record["task"] = self.task
        if self.context:
            record["context"] = self.context
        if self.states:
            record["states"] = self.states
        record["decisions"] = [
            {"plugin": p, "version": v, "hook": h.removesuffix("_call"), "verdict": verdict,
             "ms": _ms(s), **({"reason": r} if r is not None else {})}
            for p, v, h, verdict, r, s in entries(self.trail)]
        self._content(record)
        record["outcome"] = self.outcome
        record["ms"] = _ms(time.perf_counter() - self.started)
        return orjson.dumps(record)

    def _content(self, record: dict[str, Any]) -> None:
        if self.content == "none" or self.params is None:
            return
        sent = self.kept if self.kept is not None else self.params
        data = orjson.dumps(sent, option=orjson.OPT_SORT_KEYS)
        record["request_sha256"] = hashlib.sha256(data).hexdigest()
        record["request_bytes"] = len(data)
        reply = "".join(self.reply).encode()
        if self.reply:
            record["reply_sha256"] = hashlib.sha256(reply).hexdigest()
            record["reply_bytes"] = len(reply)
        if self.content != "full":
            return
        record["request"] = sent
        if self.kept is not None:
            record["request_redacted"] = True
        if self.reply:
            record["reply"] = self.reply
