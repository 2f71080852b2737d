"""Messages/s and added latency of the agent gateway: the official a2a-sdk client sends
SendMessage to a real A2A agent made with the SDK (tests/fixtures/a2a_peer.py, an echo
agent in its own process), straight to the agent and through the gateway, in the same
run, with the same client code, at 1 and at ``concurrency`` messages in flight; and the
same with bare JSON-RPC POSTs over aiohttp, one connection per request (a kept-alive
client connection to the SDK's uvicorn agent stalls ~40 ms a request on delayed ACKs,
as the SDK client's httpx does: that hides the gateway's own cost).

The gateway path crosses the master (HTTP, auth, routing), a gateway worker (roles,
ownership, plugin chain, audit record durable before the answer) and one more HTTP hop;
"added" is the gateway's median latency minus the direct one.  Run it from a checkout
(it starts the test agent from tests/fixtures).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from daemon.bench.harness import percentile, temporary_daemon
from daemon.control.client import read_control_file
from daemon.front.auth import admin_token_path

ROOT = Path(__file__).resolve().parent.parent.parent


def _peer() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fixtures.a2a_peer", "--kind",
                             "echo"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING"):
        proc.kill()
        raise RuntimeError(f"the A2A test agent did not start: {line!r}")
    return proc, f"http://127.0.0.1:{line.split()[1]}"


async def _load(url: str, token: str | None, concurrency: int, duration: float,
                kind: str) -> dict[str, Any]:
    """``kind``: "sdk" (the a2a-sdk client, on httpx) or "raw" (JSON-RPC POSTs with
    aiohttp, a connection per request: a kept-alive connection to the uvicorn agent
    stalls ~40 ms a request on delayed ACKs, which hides the gateway's own cost)."""
    import aiohttp
    import httpx
    from a2a.client import ClientConfig, ClientFactory
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types.a2a_pb2 import Role, SendMessageRequest

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx.AsyncClient(headers=headers, timeout=30,
                             limits=httpx.Limits(max_connections=concurrency * 2))
    client = await ClientFactory(ClientConfig(httpx_client=http, streaming=False)) \
        .create_from_url(url)
    raw = aiohttp.ClientSession(headers={**headers, "A2A-Version": "1.0"},
                                connector=aiohttp.TCPConnector(force_close=True))
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
        "message": {"role": "ROLE_USER", "messageId": "m", "parts": [{"text": "ping"}]}}})
    samples: list[float] = []
    errors = 0

    async def send() -> None:
        if kind == "sdk":
            async for _reply in client.send_message(SendMessageRequest(
                    message=new_text_message("ping", role=Role.ROLE_USER))):
                pass
            return
        async with raw.post(url, data=body,
                            headers={"Content-Type": "application/json"}) as response:
            if "result" not in orjson.loads(await response.read()):
                raise RuntimeError("an error answer")

    async def one() -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            await send()
        except Exception:
            errors += 1
            return
        samples.append((time.perf_counter() - started) * 1000)

    async def worker(until: float) -> None:
        while time.perf_counter() < until:
            await one()

    warm = time.perf_counter() + min(0.5, duration / 4)
    await asyncio.gather(*(worker(warm) for _ in range(concurrency)))
    samples.clear()
    began = time.perf_counter()
    await asyncio.gather(*(worker(began + duration) for _ in range(concurrency)))
    took = time.perf_counter() - began
    await client.close()
    await http.aclose()
    await raw.close()
    ordered = sorted(samples) or [0.0]
    return {"calls_per_s": round(len(samples) / took), "errors": errors,
            "latency_ms": {"p50": round(percentile(ordered, 50), 3),
                           "p99": round(percentile(ordered, 99), 3),
                           "p999": round(percentile(ordered, 99.9), 3)}}


def run(concurrency: int = 8, duration: float = 3.0) -> dict[str, Any]:
    results: dict[str, Any] = {"concurrency": concurrency, "duration_s": duration,
                               "cpus": os.cpu_count()}
    proc, peer = _peer()
    try:
        with temporary_daemon(gateway_workers=2, extra={
                "a2a": {"card_refresh": 60.0}, "a2a.peers.echo": {"url": peer}}) as daemon:
            listen = read_control_file(daemon.state_dir)["listen"]
            token = admin_token_path(daemon.state_dir).read_text().strip()
            deadline = time.monotonic() + 20
            while not (daemon.status().get("a2a_peers") or {}).get("echo", {}).get(
                    "available"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the gateway did not read the agent's card")
                time.sleep(0.1)
            gateway = f"http://{listen['http']}/a2a/echo"
            for kind in ("sdk", "raw"):
                for n in (1, concurrency):
                    results[f"{kind}_direct_c{n}"] = asyncio.run(
                        _load(peer, None, n, duration, kind))
                    results[f"{kind}_gateway_c{n}"] = asyncio.run(
                        _load(gateway, token, n, duration, kind))
    finally:
        proc.kill()
        proc.wait()
    for kind in ("sdk", "raw"):
        for n in (1, concurrency):
            direct, through = results[f"{kind}_direct_c{n}"], results[f"{kind}_gateway_c{n}"]
            results[f"{kind}_added_p50_ms_c{n}"] = round(through["latency_ms"]["p50"]
                                                         - direct["latency_ms"]["p50"], 3)
            results[f"{kind}_ratio_gateway_to_direct_c{n}"] = round(
                through["calls_per_s"] / (direct["calls_per_s"] or 1), 3)
    return results
