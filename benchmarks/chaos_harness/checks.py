"""What the harness checks at the end, from the ledger and the audit log.

The audit log is read from its files, a line at a time (a soak writes millions of
records).  A call is found by the digest of its (unique) arguments: a success must have
a ``call`` record with status ``ok``; a -32014 is allowed only for a call whose tool had
started, which the log shows as an ``intent`` record (and ``echo``, pure, never has one).

An LLM or A2A request is found by its ``request_sha256`` (of the body as sent; of the
A2A params as canonical JSON): a success must have exactly one ``llm``/``a2a`` record
with status ``ok``, and every request one record of its fate: the worker's, or the
master's ``lost``/``refused`` (which carry no digest: they are counted per agent).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks.chaos_harness.agents import BAD_AGENT
from benchmarks.chaos_harness.ledger import Request

BAD_AGENT_ANSWERS = ("denied", "error -32018", "error -32019")  # what a poison call may get
GATEWAY_KINDS = ("llm", "a2a")  # Request.tool of the AI and agent gateways' requests
# What README and DESIGN.md document for these faults: provider down or worker died after
# the request went out (502), timed out (504), audit (503), busy (429); A2A: peer
# unavailable (-32024), worker died (-32014), timed out (-32016), audit (-32017), busy
# (-32013); mid-stream, any of these as an error event.
DOCUMENTED = {"llm": ("http 429", "http 502", "http 503", "http 504", "stream error "),
              "a2a": ("error -32013", "error -32014", "error -32016", "error -32017",
                      "error -32024", "stream error -32013", "stream error -32014",
                      "stream error -32016", "stream error -32017", "stream error -32024")}
BROKEN = ("wrong", "cut", "garbled")  # a success that is not one, or an answer torn off
MEMORY_FACTOR = 3.0
MEMORY_GROWTH = 200 << 20


@dataclass
class AuditIndex:
    ok_calls: Counter[tuple[str, str, bytes]] = field(default_factory=Counter)  # agent,
    # tool ("llm"/"a2a" for those gateways), digest -> ok records
    intents: set[bytes] = field(default_factory=set)  # argument digests of started tools
    fates: Counter[str] = field(default_factory=Counter)  # agent -> its LLM/A2A records
    records: int = 0
    unreadable: int = 0

    @classmethod
    def read(cls, directory: Path) -> AuditIndex:
        index = cls()
        for path in sorted(directory.glob("audit-*.jsonl")):
            with path.open("rb") as lines:
                for line in lines:
                    try:
                        index.add(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        index.unreadable += 1  # `audit verify` says what is wrong
        return index

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        kind = record.get("kind")
        if kind in GATEWAY_KINDS or (kind in ("lost", "refused") and str(
                record.get("tool")).startswith(("llm/", "a2a/"))):
            self.fates[str(record.get("agent"))] += 1
            sha = record.get("request_sha256")
            if kind in GATEWAY_KINDS and sha and (record.get("outcome") or {}).get(
                    "status") == "ok":
                self.ok_calls[(str(record.get("agent")), str(kind), bytes.fromhex(sha))] += 1
            return
        sha = record.get("args_sha256")
        if not sha:
            return
        if record.get("kind") == "intent":
            self.intents.add(bytes.fromhex(sha))
        elif kind == "call" and (record.get("outcome") or {}).get("status") == "ok":
            self.ok_calls[(str(record.get("agent")), str(record.get("tool")),
                           bytes.fromhex(sha))] += 1


@dataclass
class Tally:
    """The ledger, counted."""

    requests: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    audit_missing: int = 0
    audit_twice: int = 0  # an LLM/A2A success with more than one ok record
    unstarted_32014: int = 0  # -32014 for a call whose tool had not started

    @property
    def ok_percent(self) -> float:
        return 100.0 * self.verdicts["ok"] / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        errors = {v: n for v, n in sorted(self.verdicts.items()) if v != "ok"}
        return {"requests": self.requests, "ok": self.verdicts["ok"],
                "ok_percent": round(self.ok_percent, 3), "outcomes": errors,
                "lost": self.verdicts["lost"], "duplicates": self.duplicates,
                "wrong": self.verdicts["wrong"], "cut": self.verdicts["cut"],
                "garbled": self.verdicts["garbled"], "audit_missing": self.audit_missing,
                "audit_twice": self.audit_twice, "unstarted_32014": self.unstarted_32014}

    @property
    def broken(self) -> int:
        return sum(self.verdicts[v] for v in BROKEN)


def tally(requests: list[Request], audit: AuditIndex) -> Tally:
    out = Tally()
    for request in requests:
        verdict = request.verdict()
        out.requests += 1
        out.verdicts[verdict] += 1
        out.duplicates += request.answers > 1
        digest = request.digest
        audited = audit.ok_calls[(request.agent, request.tool, digest)]
        if verdict == "ok" and not audited:
            out.audit_missing += 1
        if verdict == "ok" and audited > 1 and request.tool in GATEWAY_KINDS:
            out.audit_twice += 1
        if verdict == "error -32014" and (request.tool == "echo"
                                          or digest not in audit.intents):
            out.unstarted_32014 += 1
    return out


def unaudited_fates(requests: list[Request], audit: AuditIndex) -> dict[str, int]:
    """Per LLM/A2A agent, answered requests beyond the records of their fates."""
    answered: Counter[str] = Counter(r.agent for r in requests
                                     if r.tool in GATEWAY_KINDS and r.answers)
    return {agent: n - audit.fates[agent] for agent, n in sorted(answered.items())
            if n > audit.fates[agent]}


def undocumented(requests: list[Request]) -> Counter[str]:
    """LLM/A2A errors that README and DESIGN.md do not document for these faults."""
    return Counter(f"{r.tool}: {v}" for r in requests if r.tool in GATEWAY_KINDS
                   and (v := r.verdict()) not in ("ok", "lost", *BROKEN)
                   and not v.startswith(DOCUMENTED[r.tool]))


def by_kind(requests: list[Request]) -> tuple[list[Request], list[Request]]:
    """(tool calls, LLM and A2A requests)."""
    return ([r for r in requests if r.tool not in GATEWAY_KINDS],
            [r for r in requests if r.tool in GATEWAY_KINDS])


def split(requests: list[Request]) -> tuple[list[Request], list[Request]]:
    """(the well-behaved agents' requests, the bad agent's)."""
    good = [r for r in requests if r.agent != BAD_AGENT]
    return good, [r for r in requests if r.agent == BAD_AGENT]


def breakdown(requests: list[Request], key: str) -> dict[str, dict[str, Any]]:
    """requests and ok % per value of ``key`` ("door" or "agent")."""
    groups: dict[str, list[Request]] = {}
    for r in requests:
        groups.setdefault(getattr(r, key), []).append(r)
    return {name: {"requests": len(rs),
                   "ok_percent": round(100.0 * sum(r.verdict() == "ok" for r in rs)
                                       / len(rs), 3)}
            for name, rs in sorted(groups.items())}


def memory_grew_too_much(start: dict[str, int], end: dict[str, int]) -> bool:
    before, after = sum(start.values()), sum(end.values())
    return after > MEMORY_FACTOR * before or after - before > MEMORY_GROWTH


def bad_agent_unexpected(bad: Tally) -> int:
    """Poison calls answered otherwise than denied, -32018 or -32019."""
    return sum(n for v, n in bad.verdicts.items() if v not in BAD_AGENT_ANSWERS)
