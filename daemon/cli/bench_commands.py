"""`workingagents bench ...`: the benchmark harness (figures, never pass/fail)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import orjson

F = TypeVar("F", bound=Callable[..., Any])


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    for key, value in result.items():
        if isinstance(value, dict) and "median" not in value:  # e.g. bundled_chain
            _emit({f"{key}.{k}": v for k, v in value.items()}, False)
        elif isinstance(value, dict):
            click.echo(f"{key:<46} median {value['median']:8.2f}  p99 {value['p99']:8.2f}  "
                       f"min {value['min']:8.2f}  max {value['max']:8.2f}  (n={value['n']})")
        else:
            click.echo(f"{key:<46} {value}")


@click.group()
def bench() -> None:
    """Benchmarks against a throwaway daemon on ipc:// (it is stopped afterwards)."""


@bench.command()
@click.option("--kills", default=50, show_default=True, help="How many kill -9s.")
@click.option("--gap", default=0.3, show_default=True, help="Seconds between kills.")
@click.option("--json", "as_json", is_flag=True)
def restart(kills: int, gap: float, as_json: bool) -> None:
    """Time from kill -9 of a worker to its replacement being READY."""
    from daemon.bench import restart_latency

    result = restart_latency.run(kills, gap)
    _emit(result, as_json)
    if not as_json:
        seen = result["kill_to_ready_seen_ms"]["median"]
        bare = result["reference_interpreter_with_worker_imports_ms"]["median"]
        click.echo(f"ratio: a restart costs {seen / bare:.2f}x an interpreter start with the "
                   f"worker's imports")


@bench.command()
@click.option("--workers", default=8, show_default=True, help="Gateway workers to start.")
@click.option("--json", "as_json", is_flag=True)
def memory(workers: int, as_json: bool) -> None:
    """Memory per idle worker (RSS, PSS, USS) and for the whole tree."""
    from daemon.bench import worker_memory

    _emit(worker_memory.run(workers), as_json)


def _load_options(func: F) -> F:
    """The agent load of the gateway and audit benches: pipelined echo calls."""
    for option in reversed((
            click.option("--conns", default=8, show_default=True, help="Agent connections."),
            click.option("--window", default=16, show_default=True,
                         help="Calls in flight per connection."),
            click.option("--duration", default=3.0, show_default=True,
                         help="Seconds per measurement."),
            click.option("--json", "as_json", is_flag=True))):
        func = option(func)
    return func


@bench.command()
@_load_options
def gateway(conns: int, window: int, duration: float, as_json: bool) -> None:
    """Pipelined echo calls over ZeroMQ and TCP vs a bare pyzmq ROUTER echo, with the
    empty chain and with the bundled plugin chain."""
    from daemon.bench import gateway_load

    _emit_rows(gateway_load.run(conns, window, duration), as_json)


@bench.command()
@_load_options
def audit(conns: int, window: int, duration: float, as_json: bool) -> None:
    """Calls/s and p99 with audit fsync "never", "batch" (default) and "always"."""
    from daemon.bench import audit_modes

    _emit_rows(audit_modes.run(conns, window, duration), as_json)


@bench.command()
@click.option("--concurrency", default=8, show_default=True,
              help="Messages in flight (also measured at 1).")
@click.option("--duration", default=3.0, show_default=True, help="Seconds per measurement.")
@click.option("--json", "as_json", is_flag=True)
def a2a(concurrency: int, duration: float, as_json: bool) -> None:
    """A2A messages/s and added latency: the a2a-sdk client straight to an SDK echo
    agent vs through the agent gateway, same client, same run."""
    from daemon.bench import a2a_load

    _emit_rows(a2a_load.run(concurrency, duration), as_json)


def _emit_rows(result: dict[str, Any], as_json: bool) -> None:
    """Load results: one row per measurement (calls/s, latency percentiles)."""
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    for key, value in result.items():
        if isinstance(value, dict):
            lat = value["latency_ms"]
            click.echo(f"{key:<28} {value['calls_per_s']:>8} calls/s  p50 {lat['p50']:.3f} ms  "
                       f"p99 {lat['p99']:.3f} ms  p999 {lat['p999']:.3f} ms  "
                       f"errors {value['errors']}")
        elif key != "daemon_log":
            click.echo(f"{key:<28} {value}")


@bench.command()
@click.option("--duration", default=3.0, show_default=True, help="Seconds per measurement.")
@click.option("--concurrency", default=16, show_default=True,
              help="Requests in flight for the throughput runs.")
@click.option("--fsync", default="batch", show_default=True,
              type=click.Choice(["batch", "always", "never"]), help="[audit] fsync.")
@click.option("--json", "as_json", is_flag=True)
def llm(duration: float, concurrency: int, fsync: str, as_json: bool) -> None:
    """The AI gateway vs a fake OpenAI provider straight, same client, same run:
    added latency (p50, p99, time to first token) and requests/s, plain and streamed,
    with the bundled guardrails and the audit log on."""
    from daemon.bench import llm_load

    result = llm_load.run(duration, concurrency, fsync)
    if as_json:
        _emit(result, True)
        return
    for key, value in result.items():
        shown = orjson.dumps(value).decode() if isinstance(value, dict) else value
        click.echo(f"{key:<34} {shown}")


@bench.command()
@click.option("--swaps", default=10, show_default=True, help="File drops to time.")
@click.option("--duration", default=3.0, show_default=True, help="Seconds per throughput run.")
@click.option("--json", "as_json", is_flag=True)
def plugins(swaps: int, duration: float, as_json: bool) -> None:
    """Calls/s with the bundled chain vs none, and file-drop-to-live swap latency."""
    from daemon.bench import plugin_swap

    result = plugin_swap.run(swaps, duration)
    if as_json:
        _emit(result, True)
        return
    _emit_rows({k: result[k] for k in ("empty_chain", "bundled_chain",
                                       "ratio_bundled_to_empty")}, False)
    _emit({"swap_latency_ms": result["swap_latency_ms"]}, False)


@bench.command()
@click.option("--clients", default=8, show_default=True,
              help="HTTP clients (keep-alive sessions).")
@click.option("--window", default=8, show_default=True,
              help="Requests in flight per client.")
@click.option("--duration", default=3.0, show_default=True, help="Seconds per measurement.")
@click.option("--json", "as_json", is_flag=True)
def http(clients: int, window: int, duration: float, as_json: bool) -> None:
    """tools/call echo through POST /mcp (stateless era, JSON responses) vs a bare aiohttp
    server answering the same JSON-RPC body, same clients, same run."""
    from daemon.bench import http_load

    _emit_rows(http_load.run(clients, window, duration), as_json)
