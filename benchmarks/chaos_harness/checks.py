"""What the harness checks at the end, from the ledger and the audit log.

The audit log is read from its files, a line at a time (a soak writes millions of
records).  A call is found by the digest of its (unique) arguments: a success must have
a ``call`` record with status ``ok``; a -32014 is allowed only for a call whose tool had
started, which the log shows as an ``intent`` record (and ``echo``, pure, never has one).
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
MEMORY_FACTOR = 3.0
MEMORY_GROWTH = 200 << 20


@dataclass
class AuditIndex:
    ok_calls: set[tuple[str, str, bytes]] = field(default_factory=set)  # agent, tool, digest
    intents: set[bytes] = field(default_factory=set)  # argument digests of started tools
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
        sha = record.get("args_sha256")
        if not sha:
            return
        if record.get("kind") == "intent":
            self.intents.add(bytes.fromhex(sha))
        elif record.get("kind") == "call" and (record.get("outcome") or {}).get("status") == "ok":
            self.ok_calls.add((str(record.get("agent")), str(record.get("tool")),
                               bytes.fromhex(sha)))


@dataclass
class Tally:
    """The ledger, counted."""

    requests: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    audit_missing: int = 0
    unstarted_32014: int = 0  # -32014 for a call whose tool had not started

    @property
    def ok_percent(self) -> float:
        return 100.0 * self.verdicts["ok"] / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        errors = {v: n for v, n in sorted(self.verdicts.items()) if v != "ok"}
        return {"requests": self.requests, "ok": self.verdicts["ok"],
                "ok_percent": round(self.ok_percent, 3), "outcomes": errors,
                "lost": self.verdicts["lost"], "duplicates": self.duplicates,
                "wrong": self.verdicts["wrong"], "audit_missing": self.audit_missing,
                "unstarted_32014": self.unstarted_32014}


def tally(requests: list[Request], audit: AuditIndex) -> Tally:
    out = Tally()
    for request in requests:
        verdict = request.verdict()
        out.requests += 1
        out.verdicts[verdict] += 1
        out.duplicates += request.answers > 1
        digest = request.digest
        if verdict == "ok" and (request.agent, request.tool, digest) not in audit.ok_calls:
            out.audit_missing += 1
        if verdict == "error -32014" and (request.tool == "echo"
                                          or digest not in audit.intents):
            out.unstarted_32014 += 1
    return out


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
