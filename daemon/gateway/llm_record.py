"""The audit record of one AI gateway request: one record per request, written when it
ends (a stream too: its end waits for the record, like a tool call's answer).

    {"kind": "llm", "agent", "model", "api", "stream", "provider", "attempts",
     "decisions", "usage": {"prompt", "completion", "total"}, "cost", "outcome",
     "ms", "ttft_ms", "worker", + content as [audit] llm_content says}

Content: "digest" keeps sha256 and size of the request and of the completion, "full"
keeps them as they left the gateway (after the guardrails: what a guardrail redacted is
recorded redacted; a request refused before the guardrails passed it keeps its digest
only), "none" keeps neither.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from daemon.gateway.call_record import _HOOKS, _ms
from daemon.gateway.plugin_chain import Trail, entries


class LlmTrace:
    __slots__ = ("agent", "api", "attempts", "completion", "content", "cost", "first_token",
                 "kept", "method", "model", "outcome", "provider", "raw", "screened",
                 "started", "stream", "streaming", "t", "trail", "usage", "worker")

    def __init__(self, worker: str, agent: str, method: str, raw: bytes, content: str) -> None:
        self.worker = worker
        self.agent = agent
        self.method = method
        self.api = method.removeprefix("llm/")
        self.raw = raw  # the agent's request body
        self.content = content
        self.t = time.time()
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.model: str | None = None
        self.stream = False
        self.streaming = False  # a stream's head has gone out: errors are SSE events now
        self.provider: str | None = None
        self.attempts: list[dict[str, Any]] = []
        self.trail: Trail = []
        self.usage: tuple[int, int] | None = None
        self.cost: float | None = None
        self.kept: Any = None  # the request as the guardrails let it out (or a denial's copy)
        self.screened = False  # the guardrails let ``raw`` out as it is
        self.completion: Any = None  # what the agent got: the text, or the response body
        self.outcome: dict[str, Any] = {"status": "ok"}

    def token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def record(self) -> bytes:
        record: dict[str, Any] = {"kind": "llm", "t": self.t, "agent": self.agent,
                                  "model": self.model, "api": self.api,
                                  "stream": self.stream, "worker": self.worker}
        if self.provider is not None:
            record["provider"] = self.provider
        if self.attempts:
            record["attempts"] = self.attempts
        decisions = record["decisions"] = []
        for p, v, h, verdict, r, s in entries(self.trail):
            decision = {"plugin": p, "version": v, "hook": _HOOKS.get(h) or h,
                        "verdict": verdict, "ms": _ms(s)}
            if r is not None:
                decision["reason"] = r
            decisions.append(decision)
        if self.usage is not None:
            prompt, completion = self.usage
            record["usage"] = {"prompt": prompt, "completion": completion,
                               "total": prompt + completion}
        if self.cost is not None:
            record["cost"] = round(self.cost, 8)
        self._content(record)
        record["outcome"] = self.outcome
        now = time.perf_counter()
        record["ms"] = _ms(now - self.started)
        if self.first_token is not None:
            record["ttft_ms"] = _ms(self.first_token - self.started)
        return orjson.dumps(record)

    def _content(self, record: dict[str, Any]) -> None:
        if self.content == "none":
            return
        record["request_sha256"] = hashlib.sha256(self.raw).hexdigest()
        record["request_bytes"] = len(self.raw)
        completion = self.completion
        data = None if completion is None else completion.encode() if isinstance(
            completion, str) else orjson.dumps(completion)
        if data is not None:
            record["completion_sha256"] = hashlib.sha256(data).hexdigest()
            record["completion_bytes"] = len(data)
        if self.content != "full":
            return
        if self.kept is not None:
            record["request"] = self.kept
            record["request_redacted"] = True
        elif self.raw and self.screened:  # refused before the guardrails saw it: digest
            try:
                record["request"] = orjson.Fragment(orjson.dumps(orjson.loads(self.raw)))
            except orjson.JSONDecodeError:
                record["request"] = self.raw.decode(errors="replace")
        if completion is not None:
            record["completion"] = completion
