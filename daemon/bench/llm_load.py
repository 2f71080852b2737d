"""`workingagents bench llm`: the AI gateway's cost, against the provider straight.

A fake OpenAI-compatible provider runs in a process of its own (daemon.bench.fake_llm);
the same aiohttp client, in the same run, asks it directly and through the gateway (the
bundled guardrails secrets, pii, injection, permissions and budgets loaded, the audit
log on with its default "batch" fsync, or ``fsync``).  For plain and streamed chat completions:

- latency, one request at a time: p50/p99 of the whole request and, for streams, of the
  time to the first token; "added" is the gateway's p50 minus the direct p50;
- throughput, ``concurrency`` requests in flight: requests/s, and the ratio to direct;
- the same two for a bare aiohttp pass-through proxy (daemon.bench.bare_proxy: one
  process, no governance), the ceiling of any aiohttp-based gateway on this machine.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from daemon.bench.harness import bundled_plugins, temporary_daemon
from daemon.control.client import read_control_file
from daemon.front.auth import admin_token_path

KEY = "sk-bench-provider-key"
PLUGINS = ("secrets", "pii", "injection", "permissions", "budgets")
PROMPT = [{"role": "user", "content": "Summarise the quarterly report for the board, in "
                                      "three sentences, plainly."}]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _one(session: aiohttp.ClientSession, url: str, token: str,
               stream: bool) -> tuple[float, float]:
    """(seconds to the whole answer, seconds to its first token)."""
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": PROMPT, "stream": stream,
                         "max_tokens": 64})
    started = time.perf_counter()
    first = 0.0
    async with session.post(url + "/chat/completions", data=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"}) as reply:
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {(await reply.read())[:300]!r}")
        if not stream:
            await reply.read()
            first = time.perf_counter() - started
        else:
            async for chunk in reply.content.iter_any():
                if not first and b'"content":"' in chunk and b'"content":""' not in chunk:
                    first = time.perf_counter() - started
    return time.perf_counter() - started, first or time.perf_counter() - started


async def _latency(url: str, token: str, stream: bool, duration: float) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # warm the pools
            await _one(session, url, token, stream)
        totals, firsts = [], []
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            total, first = await _one(session, url, token, stream)
            totals.append(total * 1000)
            firsts.append(first * 1000)
    out = {"n": len(totals), "p50_ms": round(statistics.median(totals), 3),
           "p99_ms": round(_percentile(totals, 0.99), 3)}
    if stream:
        out["ttft_p50_ms"] = round(statistics.median(firsts), 3)
        out["ttft_p99_ms"] = round(_percentile(firsts, 0.99), 3)
    return out


async def _throughput(url: str, token: str, stream: bool, duration: float,
                      concurrency: int) -> dict[str, Any]:
    done, errors, first_error = 0, 0, ""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        end = time.perf_counter() + duration

        async def loop() -> None:
            nonlocal done, errors, first_error
            while time.perf_counter() < end:
                try:
                    await _one(session, url, token, stream)
                    done += 1
                except (RuntimeError, aiohttp.ClientError) as exc:
                    errors += 1
                    first_error = first_error or repr(exc)[:200]
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        took = time.perf_counter() - started
    out: dict[str, Any] = {"requests_per_s": round(done / took, 1), "errors": errors}
    if first_error:
        out["first_error"] = first_error
    return out


def _serve(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """A helper process (``python -m …``) that prints its port; its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run(duration: float = 3.0, concurrency: int = 16, fsync: str = "batch") -> dict[str, Any]:
    provider, direct = _serve("daemon.bench.fake_llm", KEY)
    try:
        bare, bare_url = _serve("daemon.bench.bare_proxy", direct)
    except BaseException:
        _stop(provider)
        raise
    try:
        with bundled_plugins() as plugin_dir:
            for extra in Path(plugin_dir).glob("*.py"):
                if extra.stem not in PLUGINS:
                    extra.unlink()
            with temporary_daemon(plugin_dirs=[plugin_dir], audit={"fsync": fsync}, extra={
                    "llm.providers.fake": {"kind": "openai", "base_url": direct,
                                           "api_key_env": "BENCH_PROVIDER_KEY",
                                           "models": ["gpt-*"]}},
                    env={"BENCH_PROVIDER_KEY": KEY}) as daemon:
                _wait_for_plugins(daemon)
                gateway = f"http://{read_control_file(daemon.state_dir)['listen']['http']}/v1"
                token = admin_token_path(daemon.state_dir).read_text().strip()
                return asyncio.run(_compare(direct, gateway, bare_url, token, duration,
                                            concurrency, fsync))
    finally:
        _stop(bare)
        _stop(provider)


def _wait_for_plugins(daemon: Any) -> None:
    deadline = time.monotonic() + 30
    while {p["name"] for p in daemon.status()["plugins"]["loaded"]} < set(PLUGINS):
        if time.monotonic() > deadline:
            raise RuntimeError("the bundled plugins did not load within 30s")
        time.sleep(0.1)


async def _compare(direct: str, gateway: str, bare: str, token: str, duration: float,
                   concurrency: int, fsync: str) -> dict[str, Any]:
    result: dict[str, Any] = {"plugins": list(PLUGINS), "concurrency": concurrency,
                              "audit_fsync": fsync}
    for stream in (False, True):
        mode = "stream" if stream else "plain"
        straight = await _latency(direct, KEY, stream, duration)
        through = await _latency(gateway, token, stream, duration)
        result[f"{mode}_latency_direct"] = straight
        result[f"{mode}_latency_gateway"] = through
        result[f"{mode}_added_p50_ms"] = round(through["p50_ms"] - straight["p50_ms"], 3)
        hop = await _latency(bare, KEY, stream, duration)
        result[f"{mode}_bare_proxy_added_p50_ms"] = round(hop["p50_ms"] - straight["p50_ms"], 3)
        if stream:
            result["stream_added_ttft_p50_ms"] = round(
                through["ttft_p50_ms"] - straight["ttft_p50_ms"], 3)
        fast = await _throughput(direct, KEY, stream, duration, concurrency)
        slow = await _throughput(gateway, token, stream, duration, concurrency)
        floor = await _throughput(bare, KEY, stream, duration, concurrency)
        result[f"{mode}_throughput_direct"] = fast
        result[f"{mode}_throughput_gateway"] = slow
        result[f"{mode}_throughput_bare_proxy"] = floor
        result[f"{mode}_ratio_to_direct"] = round(
            slow["requests_per_s"] / max(fast["requests_per_s"], 1e-9), 3)
        result[f"{mode}_bare_proxy_ratio_to_direct"] = round(
            floor["requests_per_s"] / max(fast["requests_per_s"], 1e-9), 3)
    return result
