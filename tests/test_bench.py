"""The benchmark harness runs end to end (short version) and cleans up after itself.

Figures are reported by `workingagents bench`, never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess

import psutil
import pytest

from tests.conftest import CLI

SLOW = os.environ.get("WA_SLOW") == "1"
# alone: the figures mean something, and "leaves nothing running" sees no other bench
pytestmark = pytest.mark.serial


def bench_daemons() -> set[int]:
    return {p.pid for p in psutil.process_iter(["cmdline"])
            if "serve" in (p.info["cmdline"] or []) and "wa-bench-" in " ".join(p.info["cmdline"])}


_others: set[int] = set()  # bench daemons of other runs on this machine, not this test's
_bare_before = {p.pid for p in psutil.process_iter(["cmdline"])
                if "daemon.bench.bare_proxy" in (p.info["cmdline"] or [])}


@pytest.fixture(autouse=True)
def _note_other_bench_daemons() -> None:
    _others.clear()
    _others.update(bench_daemons())


def daemons() -> set[int]:
    """The bench daemons this test's bench left running."""
    return bench_daemons() - _others


def test_bench_restart_reports_latency_figures_and_leaves_nothing_running():
    kills = "50" if SLOW else "3"
    out = subprocess.run([*CLI, "bench", "restart", "--kills", kills, "--gap", "0.2", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("kill_to_ready_seen_ms", "exit_to_ready_master_ms",
                "reference_interpreter_with_worker_imports_ms"):
        assert result[key]["n"] >= 3 and result[key]["median"] > 0
    assert result["kill_to_ready_seen_ms"]["n"] == int(kills)
    bundled = result["bundled_chain"]  # the same kills with the bundled plugins loaded
    for key in ("kill_to_ready_seen_ms", "exit_to_ready_master_ms"):
        assert bundled[key]["n"] == int(kills) and bundled[key]["median"] > 0
    assert result["ratio_bundled_to_empty"] > 0
    assert not daemons()


def test_bench_memory_reports_per_worker_figures():
    out = subprocess.run([*CLI, "bench", "memory", "--workers", "2", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["workers"] == 2
    assert 0 < result["worker_uss_mib"] <= result["worker_pss_mib"] <= result["worker_rss_mib"]
    bundled = result["bundled_chain"]  # the same with the bundled plugins loaded
    assert bundled["workers"] == 2
    assert 0 < bundled["worker_uss_mib"] <= bundled["worker_pss_mib"] <= bundled["worker_rss_mib"]
    assert not daemons()


def test_bench_gateway_compares_against_the_bare_zmq_ceiling_without_errors():
    duration = "3" if SLOW else "0.5"
    out = subprocess.run([*CLI, "bench", "gateway", "--duration", duration, "--conns", "4",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("bare_zmq_echo", "gateway_zmq", "gateway_tcp", "gateway_zmq_at_half_peak",
                "gateway_tcp_at_half_peak", "gateway_zmq_bundled_chain",
                "gateway_tcp_bundled_chain"):
        assert result[key]["calls_per_s"] > 0 and result[key]["errors"] == 0, key
        assert set(result[key]["latency_ms"]) == {"p50", "p99", "p999", "max"}
    assert result["ratio_gateway_tcp_to_bare"] > 0
    assert result["ratio_bundled_to_empty_chain_tcp"] > 0
    assert result["ratio_bundled_to_empty_chain_zmq"] > 0
    assert not daemons()


def test_bench_plugins_measures_the_chain_and_the_swap_latency():
    out = subprocess.run([*CLI, "bench", "plugins", "--swaps", "10" if SLOW else "2",
                          "--duration", "3" if SLOW else "0.5", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["empty_chain"]["errors"] == result["bundled_chain"]["errors"] == 0
    assert result["swap_latency_ms"]["n"] == (10 if SLOW else 2)
    assert result["ratio_bundled_to_empty"] > 0
    assert not daemons()


def test_bench_audit_compares_the_fsync_modes_without_errors():
    out = subprocess.run([*CLI, "bench", "audit", "--duration", "3" if SLOW else "0.5",
                          "--conns", "4", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for mode in ("never", "batch", "always"):
        assert result[f"fsync_{mode}"]["calls_per_s"] > 0
        assert result[f"fsync_{mode}"]["errors"] == 0
    assert result["ratio_batch_to_never"] > 0 and result["ratio_always_to_never"] > 0
    assert not daemons()


def test_bench_http_compares_post_mcp_against_a_bare_aiohttp_server_without_errors():
    out = subprocess.run([*CLI, "bench", "http", "--duration", "3" if SLOW else "0.5",
                          "--clients", "2", "--window", "4", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("bare_aiohttp", "gateway_http"):
        assert result[key]["calls_per_s"] > 0 and result[key]["errors"] == 0, key
        assert set(result[key]["latency_ms"]) == {"p50", "p99", "p999", "max"}
    assert result["ratio_gateway_http_to_bare"] > 0
    assert not daemons()


def test_bench_llm_compares_the_gateway_and_a_bare_proxy_with_the_provider_straight():
    out = subprocess.run([*CLI, "bench", "llm", "--duration", "0.5", "--concurrency", "4",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for mode in ("plain", "stream"):
        assert result[f"{mode}_throughput_gateway"]["errors"] == 0
        assert result[f"{mode}_throughput_gateway"]["requests_per_s"] > 0
        assert result[f"{mode}_latency_gateway"]["p50_ms"] > 0
        assert result[f"{mode}_ratio_to_direct"] > 0
        assert result[f"{mode}_throughput_bare_proxy"]["errors"] == 0
        assert result[f"{mode}_bare_proxy_ratio_to_direct"] > 0
    assert result["stream_latency_gateway"]["ttft_p50_ms"] > 0
    assert not {p.pid for p in psutil.process_iter(["cmdline"])
                if "daemon.bench.bare_proxy" in (p.info["cmdline"] or [])} - _bare_before


def test_bench_a2a_compares_direct_and_gateway_messages_without_errors():
    out = subprocess.run([*CLI, "bench", "a2a", "--duration", "3" if SLOW else "0.5",
                          "--concurrency", "4", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for kind in ("sdk", "raw"):
        for path in ("direct", "gateway"):
            for n in (1, 4):
                row = result[f"{kind}_{path}_c{n}"]
                assert row["calls_per_s"] > 0 and row["errors"] == 0
    assert "raw_added_p50_ms_c1" in result
    assert not daemons()
    assert not [p for p in psutil.process_iter(["cmdline"])
                if "tests.fixtures.a2a_peer" in " ".join(p.info["cmdline"] or [])]
