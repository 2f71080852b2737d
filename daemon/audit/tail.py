"""``workingagents audit tail``: the audit log as readable lines, optionally followed.

    2026-11-25 14:54:23.978 #1 call admin echo ok 0.2ms gateway-0
    2026-11-25 14:54:24.541 #4 call eve fs__write denied by permissions v3: path outside /srv
    2026-11-25 14:55:02.117 #9 llm alice gpt-4o-mini chat stream via openai ok 12+34 tokens
        $0.000021 ttft 180ms 950ms gateway-1
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from daemon.audit import chain


@dataclass(frozen=True)
class Filter:
    agent: str | None = None
    tool: str | None = None
    denied: bool = False

    def __call__(self, record: dict[str, Any]) -> bool:
        if self.agent is not None and record.get("agent") != self.agent:
            return False
        if self.tool is not None and record.get("tool", record.get("model")) != self.tool:
            return False
        return not self.denied or is_denied(record)


def is_denied(record: dict[str, Any]) -> bool:
    outcome = record.get("outcome") or {}
    return outcome.get("status") == "denied" or any(
        d.get("verdict") in ("deny", "would_deny") for d in record.get("decisions") or ())


def render(record: dict[str, Any]) -> str:
    t = float(record.get("t", 0))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"
    kind = record.get("kind", "?")
    head = f"{stamp} #{record.get('n')} {kind}"
    if kind in ("genesis", "rotate", "torn_tail", "withheld"):
        rest = {k: v for k, v in record.items() if k not in ("n", "prev", "t", "kind", "id")}
        return f"{head} {orjson.dumps(rest).decode()}"
    if kind == "llm":
        return _render_llm(head, record)
    parts = [head, str(record.get("agent")), _what(record)]
    outcome = record.get("outcome")
    if outcome is not None:
        status = outcome.get("status", "?")
        if status == "error":
            parts.append(f"error {outcome.get('code')}: {outcome.get('message')}")
        else:
            parts.append(status)
    for d in record.get("decisions") or ():
        if d.get("verdict") in ("deny", "would_deny", "rewrite"):
            why = f": {d['reason']}" if d.get("reason") else ""
            version = "" if d["version"] == "-" else f" v{d['version']}"  # roles: none
            parts.append(f"[{d['verdict']} by {d['plugin']}{version} ({d['hook']}){why}]")
    if "ms" in record:
        parts.append(f"{record['ms']:g}ms")
    parts.append(str(record.get("worker", "")))
    return " ".join(parts)


def _render_llm(head: str, record: dict[str, Any]) -> str:
    """An AI gateway request: model, API, provider, outcome, tokens, cost, timings."""
    parts = [head, str(record.get("agent"))]
    if record.get("model") is not None:  # the models list names none
        parts.append(str(record["model"]))
    parts.append(str(record.get("api")))
    if record.get("stream"):
        parts.append("stream")
    if record.get("provider"):
        parts.append(f"via {record['provider']}")
    outcome = record.get("outcome") or {}
    status = str(outcome.get("status", "?"))
    if status == "denied":
        why = f": {outcome['reason']}" if outcome.get("reason") else ""
        status = f"denied by {outcome.get('by')}{why}"
    elif status in ("error", "provider_error"):
        status = f"{status} {outcome.get('http', '')}: {outcome.get('message', '')}"[:200]
    parts.append(status)
    usage = record.get("usage")
    if usage:
        parts.append(f"{usage.get('prompt')}+{usage.get('completion')} tokens")
    if record.get("cost") is not None:
        parts.append(f"${record['cost']:g}")
    for d in record.get("decisions") or ():
        if d.get("verdict") in ("would_deny", "rewrite"):
            parts.append(f"[{d['verdict']} by {d['plugin']} ({d['hook']})]")
    if "ttft_ms" in record:
        parts.append(f"ttft {record['ttft_ms']:g}ms")
    if "ms" in record:
        parts.append(f"{record['ms']:g}ms")
    parts.append(str(record.get("worker", "")))
    return " ".join(parts)
def _what(record: dict[str, Any]) -> str:
    """What a record is about: a tool, or an A2A peer, method and task."""
    if record.get("kind") == "a2a":
        task = f" task {record['task']}" if record.get("task") else ""
        states = f" {'>'.join(record['states'])}" if record.get("states") else ""
        return f"{record.get('peer')} {record.get('method')}{task}{states}"
    return str(record.get("tool"))


Position = tuple[Path, int]  # a file and the offset up to which it has been read


def last_lines(directory: Path, count: int,
               keep: Filter) -> tuple[list[dict[str, Any]], Position]:
    """The last ``count`` records that pass ``keep``, oldest first, and where they end
    (to follow from, so that nothing written meanwhile is missed).  Files are read from
    the newest back, only as far as needed."""
    files = chain.log_files(directory)
    found: list[dict[str, Any]] = []
    position: Position = (files[-1], 0)
    for path in reversed(files):
        data = path.read_bytes()
        whole = data[:data.rfind(b"\n") + 1]
        if path == files[-1]:
            position = (path, len(whole))
        for line in reversed(whole.splitlines()):
            if len(found) >= count:
                break
            record = _parse(line)
            if record is not None and keep(record):
                found.append(record)
        if len(found) >= count:
            break
    return found[::-1], position


def follow(directory: Path, keep: Filter, start: Position,
           stop: Callable[[], bool] = lambda: False,
           poll: float = 0.2) -> Iterator[dict[str, Any]]:
    """New records as they are written after ``start``, across rotations."""
    current, offset = start
    partial = b""
    while not stop():
        with current.open("rb") as f:
            f.seek(offset)
            data = f.read()
        offset += len(data)
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        for line in lines:
            record = _parse(line)
            if record is not None and keep(record):
                yield record
        newer = [p for p in chain.log_files(directory) if p.name > current.name]
        if newer and not data:
            current, offset, partial = newer[0], 0, b""
            continue
        if not data:
            time.sleep(poll)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
