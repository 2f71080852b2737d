"""Prometheus metrics from every process of the daemon (prometheus-client).

Workers are separate processes, so the library's multiprocess mode is used: each process
writes its samples to memory-mapped files in ``<runtime_dir>/metrics`` and the master's
HTTP endpoint sums them at scrape time.  The master sets the directory before the
forkserver starts, so every worker inherits it; metrics are created on first use in each
process.  In a process where the master never set it up (the CLI, tests), every function
here does nothing.
"""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)


def prepare(directory: Path) -> None:
    """In the master, before any worker starts: a fresh directory for this run."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[ENV] = str(directory)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # in case it was imported before


@cache
def _metrics() -> dict[str, Any] | None:
    if not os.environ.get(ENV):
        return None
    from prometheus_client import Counter, Gauge, Histogram

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
        "plugins": Gauge("workingagents_plugin_loaded", "Plugin versions serving (1)",
                         ["plugin", "version"], multiprocess_mode="livemax"),
        "audit_queue": Gauge("workingagents_audit_queue_depth", "Records waiting for the "
                             "audit writer", multiprocess_mode="livesum"),
        "audit_held": Gauge("workingagents_audit_unacknowledged", "Records a process holds "
                            "until the audit log acknowledges them",
                            multiprocess_mode="livesum"),
        "fsync": Histogram("workingagents_audit_commit_seconds", "Time to write (and fsync) "
                           "one batch of audit records", buckets=LATENCY_BUCKETS),
        "records": Counter("workingagents_audit_records", "Audit records written"),
    }


@cache
def _child(name: str, *labels: str) -> Any:
    """A labelled series, looked up once (labels() costs a lock and a dict per call)."""
    metrics = _metrics()
    return metrics[name].labels(*labels) if metrics is not None else None


def call(tool: str, agent: str, outcome: str, seconds: float) -> None:
    counter = _child("calls", tool, agent, outcome)
    if counter is not None:
        counter.inc()
        _child("latency", tool).observe(seconds)


def decisions(plugin: str, version: str, verdict: str, count: int, seconds: float) -> None:
    counter = _child("decisions", plugin, version, verdict)
    if counter is not None:
        counter.inc(count)
        _child("plugin_seconds", plugin).inc(seconds)


def restart(child: str) -> None:
    counter = _child("restarts", child)
    if counter is not None:
        counter.inc()


def plugins_loaded(loaded: dict[str, str]) -> None:
    metrics = _metrics()
    if metrics is not None:
        metrics["plugins"].clear()
        for name, version in loaded.items():
            metrics["plugins"].labels(name, version).set(1)


def audit_commit(seconds: float, records: int) -> None:
    metrics = _metrics()
    if metrics is not None:
        metrics["fsync"].observe(seconds)
        metrics["records"].inc(records)


def audit_queue(depth: int) -> None:
    metrics = _metrics()
    if metrics is not None:
        metrics["audit_queue"].set(depth)


def audit_held(count: int) -> None:
    metrics = _metrics()
    if metrics is not None:
        metrics["audit_held"].set(count)


def process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay counted)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve(listen: str) -> tuple[str, int, Any]:
    """The scrape endpoint (a thread of the master); returns the address it got."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), host, registry)
    return host, server.server_port, server
