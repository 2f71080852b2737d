"""The audit records of one tools/call, as the gateway worker saw it.

A call to a pure built-in tool gets one record ("call").  A call to a tool with effects
gets an "intent" record, durable before the tool starts (so no tool runs unrecorded),
and a "call" record with the outcome that names its intent.  Records hold a digest of the
arguments (sha256 of their canonical JSON) and the arguments themselves unless the
config keeps digests only; of the result, its digest and size: the audit log proves
what happened without becoming a second copy of every tool's output.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from daemon.gateway.plugin_chain import Pass, Passes, Trail
from daemon.protocol import mcp

_SORTED = orjson.OPT_SORT_KEYS


class Trace:
    """What the audit needs to know about one call, gathered as it runs."""

    __slots__ = (
        "_canonical",
        "agent",
        "arguments",
        "intent",
        "keep_arguments",
        "kept",
        "known",
        "started",
        "t",
        "tool",
        "trail",
        "withheld",
        "worker",
    )

    def __init__(self, worker: str, agent: str, tool: Any, arguments: Any,
                 keep_arguments: bool) -> None:
        self.worker = worker
        self.agent = agent
        self.tool = tool if isinstance(tool, str) else None
        self.arguments = arguments
        self.keep_arguments = keep_arguments
        self.t = time.time()
        self.started = time.perf_counter()
        self.trail: Trail = Passes()  # a pass where every hook allowed: one entry
        self.intent: str | None = None
        self.known = False  # the tool exists and the agent may call it (a metrics label)
        self._canonical: bytes | None = None  # the arguments' canonical JSON, made once
        # the arguments as the guardrails left them (rewritten, or a denial's redacted
        # copy), recorded instead of the agent's own; None: the agent's own
        self.kept: Any = None
        self.withheld: dict[str, Any] | None = None  # a result the tool gave, not sent

    def canonical_arguments(self) -> bytes:
        if self._canonical is None:
            self._canonical = orjson.dumps(self.arguments, option=_SORTED)
        return self._canonical

    def _base(self, kind: str, with_arguments: bool) -> dict[str, Any]:
        record: dict[str, Any] = {"kind": kind, "t": self.t, "agent": self.agent,
                                  "tool": self.tool, "worker": self.worker}
        canonical = self.canonical_arguments()
        record["args_sha256"] = hashlib.sha256(canonical).hexdigest()  # of the agent's own
        if with_arguments and self.keep_arguments:
            if self.kept is None:
                record["args"] = orjson.Fragment(canonical)
            else:  # a guardrail rewrote or redacted them: never the raw secret
                record["args"] = self.kept
                record["args_redacted"] = True
        return record

    def intent_record(self) -> bytes:
        record = self._base("intent", True)
        self._decisions(record)
        return orjson.dumps(record)

    def call_record(self, outcome: dict[str, Any]) -> bytes:
        record = self._base("call", self.intent is None)
        if self.intent is not None:
            record["intent"] = self.intent
        self._decisions(record)
        record["outcome"] = outcome
        if self.withheld is not None:
            record["withheld"] = self.withheld
        record["ms"] = _ms(time.perf_counter() - self.started)
        return orjson.dumps(record)

    def _decisions(self, record: dict[str, Any]) -> None:
        """``decisions``: every hook that did something (deny, would_deny, rewrite), in
        full; ``allowed``: the plugin versions whose hooks let the call pass unchanged,
        by hook.  One dict per allowing hook (a dozen per call) was most of the record's
        cost and size."""
        decisions: list[dict[str, Any]] = []
        before: dict[str, str] = {}
        after: dict[str, str] = {}
        for entry in self.trail:
            if isinstance(entry, Pass):  # each of its hooks allowed
                (before if entry.hook == "before_call" else after).update(entry.allowed)
                continue
            plugin, version, hook, verdict, reason, seconds = entry
            if verdict == "allow":
                (before if hook == "before_call" else after)[plugin] = version
                continue
            decision = {"plugin": plugin, "version": version, "hook": _HOOKS.get(hook, hook),
                        "verdict": verdict, "ms": int(seconds * 1e6) / 1000}
            if reason is not None:
                decision["reason"] = reason
            decisions.append(decision)
        record["decisions"] = decisions
        if before or after:
            record["allowed"] = {"before": before, "after": after}


_HOOKS = {"before_call": "before", "after_call": "after"}  # as the record names them


def _ms(seconds: float) -> float:
    """Milliseconds to the microsecond (round() of a float costs ~1 µs; this, 0.1)."""
    return int(seconds * 1e6) / 1000


def result_outcome(result: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """The outcome of a call that produced a result (``raw``: its bytes as sent)."""
    denied = (result.get("_meta") or {}).get(mcp.META_DENIED)
    status = "denied" if denied else "tool_error" if result.get("isError") else "ok"
    outcome: dict[str, Any] = {"status": status, "isError": bool(result.get("isError")),
                               "result_sha256": hashlib.sha256(raw).hexdigest(),
                               "bytes": len(raw)}
    if denied:
        outcome["by"] = denied.get("by")
    return outcome


def withheld(result: dict[str, Any]) -> dict[str, Any]:
    """What the record says of a result the tool gave that the agent did not get."""
    raw = orjson.dumps(result)
    return {"tool_ran": True, "isError": bool(result.get("isError")),
            "result_sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
