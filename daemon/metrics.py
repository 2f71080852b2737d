"""Prometheus metrics from every process of the daemon (prometheus-client).

Workers are separate processes, so the library's multiprocess mode is used: each process
writes its samples to memory-mapped files in ``<runtime_dir>/metrics`` and the master's
HTTP endpoint sums them at scrape time.  The master sets the directory before the
forkserver starts, so every worker inherits it; metrics are created on first use in each
process.  In a process where the master never set it up (the CLI, tests), every function
here does nothing.  prometheus_client is imported here, at module level, so that the
forkserver preloads it and workers share its pages instead of each importing it.
"""

from __future__ import annotations

import bisect
import os
import shutil
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)

ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)


def prepare(directory: Path) -> None:
    """In the master, before any worker starts: a fresh directory for this run."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # in case it was imported before


@cache
def _metrics() -> dict[str, Any] | None:
    if not os.environ.get(ENV):
        return None
    return {
        "calls": Counter("workingagents_calls", "Tool calls answered, by outcome",
                         ["tool", "agent", "outcome"]),
        "latency": Histogram("workingagents_call_seconds", "Time from a call reaching its "
                             "gateway worker to its answer (audit wait included)",
                             ["tool"], buckets=LATENCY_BUCKETS),
        "decisions": Counter("workingagents_plugin_decisions", "Plugin hook verdicts",
                             ["plugin", "version", "verdict"]),
        "plugin_seconds": Counter("workingagents_plugin_seconds", "Time spent in plugin "
                                  "hooks (divide by decisions for the mean)", ["plugin"]),
        "restarts": Counter("workingagents_restarts", "Restarts of a child by its "
                            "supervisor", ["child"]),
        "plugins": Gauge("workingagents_plugin_loaded", "Plugin versions serving (1), or "
                         "no longer serving (0)",
                         ["plugin", "version"], multiprocess_mode="livemax"),
        "upstream_up": Gauge("workingagents_upstream_up", "1 while an upstream MCP server "
                             "is up, 0 while it restarts or is down", ["upstream"],
                             multiprocess_mode="livemax"),
        "audit_queue": Gauge("workingagents_audit_queue_depth", "Records waiting for the "
                             "audit writer", multiprocess_mode="livesum"),
        "audit_held": Gauge("workingagents_audit_unacknowledged", "Records a process holds "
                            "until the audit log acknowledges them",
                            multiprocess_mode="livesum"),
        "fsync": Histogram("workingagents_audit_commit_seconds", "Time to write (and fsync) "
                           "one batch of audit records", buckets=LATENCY_BUCKETS),
        "unauthenticated": Counter("workingagents_unauthenticated", "Requests refused for "
                                   "a missing or wrong token (-32010); never audited",
                                   ["transport"]),
        "records": Counter("workingagents_audit_records", "Audit records written (not "
                           "counting the genesis and rotate lines that open each file)"),
        "strikes": Counter("workingagents_agent_strikes", "Calls of an agent that hung, "
                           "crashed or overran a plugin budget in a gateway worker",
                           ["agent", "why"]),
        "llm_requests": Counter("workingagents_llm_requests", "AI gateway requests "
                                "answered, by outcome", ["agent", "model", "outcome"]),
        "llm_tokens": Counter("workingagents_llm_tokens", "LLM tokens providers reported, "
                              "by direction (prompt, completion)",
                              ["agent", "model", "direction"]),
        "llm_cost": Counter("workingagents_llm_cost", "LLM cost from the budgets plugin's "
                            "price table (its currency units)", ["agent", "model"]),
        "a2a_requests": Counter("workingagents_a2a_requests", "Agent gateway (A2A) "
                                "requests answered, by outcome",
                                ["agent", "peer", "method", "outcome"]),
        "quarantined": Gauge("workingagents_agent_quarantined", "1 while an agent is "
                             "quarantined (its calls answer -32019)", ["agent"],
                             multiprocess_mode="livemax"),
    }


@cache
def _child(name: str, *labels: str) -> Any:
    """A labelled series, looked up once (labels() costs a lock and a dict per call)."""
    metrics = _metrics()
    return metrics[name].labels(*labels) if metrics is not None else None


class GatewayTally:
    """Calls and plugin verdicts counted in the process, handed to prometheus once a
    second.

    Each prometheus write in multiprocess mode takes a lock and checks the pid (about
    1 µs); three per call were an eighth of a gateway worker's time, and a dozen hooks
    would make it a dozen more.  Here a call costs a dict update; ``flush`` writes the
    sums (the histogram's per-bucket values directly, as its own observe() does one
    sample at a time).
    """

    def __init__(self, timed: Callable[[], Iterable[Any]] = tuple) -> None:
        """``timed``: the passes whose hooks' time is summed on them (plugin_chain)."""
        self.timed = timed
        self.calls: dict[tuple[str, str, str], list[Any]] = {}
        self.verdicts: dict[tuple[str, str, str], list[Any]] = {}
        self.passes: dict[Any, int] = {}  # plugin_chain.Pass -> calls it allowed

    def decisions(self, trail: Iterable[Any]) -> None:
        """Count the verdict of each hook of a call's trail (plugin_chain.Trail: an
        entry per hook, or a Pass for hooks that all allowed; their time is on it)."""
        verdicts = self.verdicts
        for entry in trail:
            if not isinstance(entry, tuple):  # a plugin_chain.Pass
                self.passes[entry] = self.passes.get(entry, 0) + 1
                continue
            plugin, version, _hook, verdict, _reason, seconds = entry
            tally = verdicts.get((plugin, version, verdict))
            if tally is None:
                tally = verdicts[(plugin, version, verdict)] = [0, 0.0]
            tally[0] += 1
            tally[1] += seconds

    def call(self, tool: str, agent: str, outcome: str, seconds: float) -> None:
        tally = self.calls.get((tool, agent, outcome))
        if tally is None:
            tally = self.calls[(tool, agent, outcome)] = [0, 0.0, [0] * (len(_BOUNDS))]
        tally[0] += 1
        tally[1] += seconds
        tally[2][bisect.bisect_left(_BOUNDS, seconds)] += 1

    def flush(self) -> None:
        verdicts, self.verdicts = self.verdicts, {}
        passes, self.passes = self.passes, {}
        calls, self.calls = self.calls, {}
        for allowed, count in passes.items():
            for plugin, version, *_ in allowed.entries:
                verdicts.setdefault((plugin, version, "allow"), [0, 0.0])[0] += count
        spent: dict[str, float] = {}  # plugin -> seconds
        for allowed in self.timed():
            for plugin, seconds in allowed.take_seconds():
                spent[plugin] = spent.get(plugin, 0.0) + seconds
        if _metrics() is None:
            return
        for (plugin, version, verdict), (count, seconds) in verdicts.items():
            _child("decisions", plugin, version, verdict).inc(count)
            spent[plugin] = spent.get(plugin, 0.0) + seconds
        for plugin, seconds in spent.items():
            if seconds:
                _child("plugin_seconds", plugin).inc(seconds)
        for (tool, agent, outcome), (count, total, buckets) in calls.items():
            counter = _child("calls", tool, agent, outcome)
            if counter is None:
                continue
            counter.inc(count)
            histogram = _child("latency", tool)
            histogram._sum.inc(total)
            for i, n in enumerate(buckets):
                if n:
                    histogram._buckets[i].inc(n)


_BOUNDS = (*LATENCY_BUCKETS, float("inf"))


class LlmTally:
    """AI gateway requests, tokens and cost by agent and model, counted in the process
    and handed to prometheus once a second (``flush``), as GatewayTally does: four
    prometheus writes per request (each a lock and a pid check) were a twentieth of a
    gateway worker's time."""

    def __init__(self) -> None:
        # (agent, model, outcome) -> [requests, prompt tokens, completion tokens, cost]
        self.counts: dict[tuple[str, str, str], list[Any]] = {}

    def request(self, trace: Any) -> None:
        # a model a provider served: bounded (the names of its 404s are the agent's)
        outcome = trace.outcome
        model = trace.model if trace.provider and outcome.get("http") != 404 else "unknown"
        key = (trace.agent, model, str(outcome.get("status", "?")))
        tally = self.counts.get(key)
        if tally is None:
            tally = self.counts[key] = [0, None, 0, 0.0]
        tally[0] += 1
        usage = trace.usage
        if usage is not None:
            tally[1] = (tally[1] or 0) + usage[0]  # None: no request reported usage
            tally[2] += usage[1]
        if trace.cost:
            tally[3] += trace.cost

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for (agent, model, outcome), (requests, prompt, completion, cost) in counts.items():
            counter = _child("llm_requests", agent, model, outcome)
            if counter is None:
                return
            counter.inc(requests)
            if prompt is not None:
                _child("llm_tokens", agent, model, "prompt").inc(prompt)
                _child("llm_tokens", agent, model, "completion").inc(completion)
            if cost:
                _child("llm_cost", agent, model).inc(cost)


class A2aTally:
    """Agent gateway requests by agent, peer, method and outcome (written at once: a
    message to another agent costs far more than the prometheus write)."""

    def request(self, trace: Any) -> None:
        peer = "unknown" if trace.outcome.get("http") == 404 else trace.peer  # bounded
        counter = _child("a2a_requests", trace.agent, peer, trace.method or "invalid",
                         str(trace.outcome.get("status", "?")))
        if counter is not None:
            counter.inc()


def restart(child: str) -> None:
    counter = _child("restarts", child)
    if counter is not None:
        counter.inc()


def agent_strike(agent: str, why: str) -> None:
    counter = _child("strikes", agent, why)
    if counter is not None:
        counter.inc()


def agent_quarantined(agent: str, on: bool) -> None:
    gauge = _child("quarantined", agent)
    if gauge is not None:
        gauge.set(1 if on else 0)


_shown_plugins: set[tuple[str, str]] = set()


def plugins_loaded(loaded: dict[str, str]) -> None:
    """1 for each (plugin, version) serving; 0 for one that no longer does (multiprocess
    mode cannot remove a series)."""
    metrics = _metrics()
    if metrics is None:
        return
    now = set(loaded.items())
    for name, version in _shown_plugins - now:
        metrics["plugins"].labels(name, version).set(0)
    for name, version in now:
        metrics["plugins"].labels(name, version).set(1)
    _shown_plugins.clear()
    _shown_plugins.update(now)


def upstream_up(name: str, up: bool) -> None:
    """Set by the master whenever an upstream's state changes."""
    gauge = _child("upstream_up", name)
    if gauge is not None:
        gauge.set(1 if up else 0)


def unauthenticated(transport: str) -> None:
    counter = _child("unauthenticated", transport)
    if counter is not None:
        counter.inc()


def audit_commit(seconds: float, records: int) -> None:
    metrics = _metrics()
    if metrics is not None:
        metrics["fsync"].observe(seconds)
        metrics["records"].inc(records)


def audit_queue(depth: int) -> None:
    _set("audit_queue", depth)


def audit_held(count: int) -> None:
    _set("audit_held", count)


def _set(gauge: str, value: float) -> None:
    metrics = _metrics()
    if metrics is not None:
        metrics[gauge].set(value)


def process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay counted)."""
    if os.environ.get(ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve(listen: str) -> tuple[str, int, Any]:
    """The scrape endpoint (a thread of the master); returns the address it got."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), host, registry)
    return host, server.server_port, server
