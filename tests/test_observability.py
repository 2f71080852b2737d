"""Prometheus metrics from every process, status --watch, and JSON logs."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.protocol.jsonrpc import RpcError
from tests.conftest import wait_for
from tests.gateway_helpers import agent, gateway_config, listen, shard
from tests.plugin_versions import COUNTER_V1


def scrape(daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    address = listen(daemon)["metrics"]
    assert address.startswith("127.0.0.1:")
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scraped_when(daemon, done) -> dict:
    """Workers hand their tallies to prometheus once a second: scrape until ``done``."""
    return wait_for(lambda: (lambda s: s if done(s) else None)(scrape(daemon)), 10,
                    "the metrics to catch up")


def test_metrics_scraped_over_http_count_the_calls_just_made(start_daemon, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "counter.py").write_text(COUNTER_V1)
    d = start_daemon(extra={**gateway_config(), "plugins": {"dirs": [str(plugins)]}})
    d.wait_ready()
    with agent(d, "bob") as bob, agent(d, "alice") as alice:
        for i in range(5):
            bob.call_tool("echo", {"i": i})
        for i in range(3):
            alice.call_tool("echo", {"i": i})
        with pytest.raises(RpcError):
            alice.call_tool("sleep", {"seconds": 0})  # not in alice's role: hidden
        bob.call_tool("sleep", {"seconds": 0.01})
    samples = scraped_when(d, lambda s: value(s, "workingagents_call_seconds_count",
                                              tool="echo") == 8)
    assert value(samples, "workingagents_calls_total", tool="echo", agent="bob",
                 outcome="ok") == 5
    assert value(samples, "workingagents_calls_total", tool="echo", agent="alice",
                 outcome="ok") == 3
    # a tool the roles hide is a denial by roles, under its own (existing) name
    assert value(samples, "workingagents_calls_total", tool="sleep", agent="alice",
                 outcome="denied") == 1
    assert value(samples, "workingagents_calls_total", tool="sleep", agent="bob",
                 outcome="ok") == 1
    # 10 calls + the intent of the sleep call (genesis and rotate lines are not counted)
    assert value(samples, "workingagents_audit_records_total") == 11
    assert value(samples, "workingagents_audit_commit_seconds_count") >= 1
    assert value(samples, "workingagents_plugin_loaded", plugin="counter", version="1") == 1
    assert value(samples, "workingagents_plugin_decisions_total", plugin="counter",
                 version="1", verdict="allow") == 9  # before_call of each call that ran
    victim = shard("bob")
    os.kill(d.pids()[victim], signal.SIGKILL)
    scraped_when(d, lambda s: value(s, "workingagents_restarts_total", child=victim) == 1)
    # counts from the dead incarnation stay counted
    assert value(scrape(d), "workingagents_calls_total", tool="echo", agent="bob",
                 outcome="ok") == 5


def test_status_watch_draws_the_tree_and_rates(start_daemon):
    d = start_daemon(extra=gateway_config())
    d.wait_ready()
    with agent(d, "bob") as bob:
        bob.call_tool("echo", {})
    out = d.cli("status", "--watch", "--interval", "0.2", "--count", "2")
    assert out.returncode == 0, out.stderr
    for needle in ("gateway-0", "audit: writing audit-00000001.jsonl",
                   "per second since the last refresh", "audited", "denied"):
        assert needle in out.stdout


def test_log_format_json_is_one_object_per_line_from_every_process(start_daemon, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    d = start_daemon(daemon={"log_format": "json"}, extra={"plugins": {"dirs": [str(plugins)]}})
    d.wait_ready()
    (plugins / "counter.py").write_text(COUNTER_V1)  # every gateway worker logs the swap
    wait_for(lambda: d.log().count("plugin counter v1 serving") == 2, 15, "the swap")
    d.stop()
    events = [json.loads(line) for line in d.log().splitlines()]
    processes = {e["process"] for e in events}
    assert {"master", "audit", "gateway-0", "gateway-1"} <= processes
    assert all({"time", "level", "pid", "logger", "message"} <= e.keys() for e in events)
    assert any(e["message"].startswith("ready:") for e in events)
