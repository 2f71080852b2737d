"""MCP over HTTP: calls/s and latency through ``POST /mcp`` against a bare aiohttp server.

N clients (one aiohttp session and keep-alive connection pool each) keep ``window``
``tools/call echo`` requests in flight each, in the stateless 2026-07-28 era with JSON
responses, against the daemon (default config: audit on, empty plugin chain).  The same
clients then run against a bare aiohttp server that parses the same body and answers the
same JSON-RPC result (no gateway), so the daemon's figure is a ratio of that ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from daemon.bench.gateway_load import _percentiles
from daemon.bench.harness import temporary_daemon
from daemon.control.client import read_control_file
from daemon.front.auth import admin_token_path

VERSION = "2026-07-28"


def _request(rid: int) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"n": rid},
        "_meta": {"io.modelcontextprotocol/protocolVersion": VERSION,
                  "io.modelcontextprotocol/clientCapabilities": {}}}})


async def _load(url: str, token: str, clients: int, window: int,
                duration: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": VERSION, "Mcp-Method": "tools/call",
               "Mcp-Name": "echo"}
    latencies: list[float] = []
    errors = 0
    ids = iter(range(1, 1 << 62))
    stop_at = 0.0

    async def caller(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            rid = next(ids)
            t0 = time.perf_counter()
            async with session.post(url, data=_request(rid), headers=headers) as reply:
                answer = orjson.loads(await reply.read())
            if reply.status != 200 or "error" in answer or answer.get("id") != rid:
                errors += 1
            latencies.append((time.perf_counter() - t0) * 1000)

    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=window))
                for _ in range(clients)]
    try:
        for measured in (False, True):  # a warm-up (connections, caches), then the run
            latencies.clear()
            errors = 0
            span = duration if measured else min(0.5, duration / 4)
            start = time.perf_counter()
            stop_at = start + span
            await asyncio.gather(*(caller(s) for s in sessions for _ in range(window)))
            elapsed = time.perf_counter() - start
    finally:
        for session in sessions:
            await session.close()
    return {"calls_per_s": round(len(latencies) / elapsed), "errors": errors,
            "latency_ms": _percentiles(latencies)}


def measure(url: str, token: str, clients: int, window: int,
            duration: float) -> dict[str, Any]:
    result: dict[str, Any] = _run(_load(url, token, clients, window, duration))
    return result


def _run(main: Any) -> Any:
    """On uvloop where it is installed (as the daemon runs), so the client costs less."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def bare_server() -> None:
    """The ceiling: aiohttp answering each POSTed echo call itself (no gateway)."""

    async def echo(request: web.Request) -> web.Response:
        message = orjson.loads(await request.read())
        text = orjson.dumps(message["params"]["arguments"]).decode()
        return web.Response(body=orjson.dumps({
            "jsonrpc": "2.0", "id": message["id"], "result": {
                "content": [{"type": "text", "text": text}], "isError": False,
                "resultType": "complete"}}), content_type="application/json")

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/mcp", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = getattr(site, "_server", None)
        assert server is not None
        print(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        _run(serve())


def run(clients: int = 8, window: int = 8, duration: float = 3.0) -> dict[str, Any]:
    results: dict[str, Any] = {"clients": clients, "window": window, "duration_s": duration,
                               "cpus": os.cpu_count()}
    proc = subprocess.Popen([sys.executable, "-c", "from daemon.bench.http_load import "
                             "bare_server; bare_server()"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        results["bare_aiohttp"] = measure(f"http://{address}/mcp", "none", clients, window,
                                          duration)
    finally:
        proc.kill()
        proc.wait()
    with temporary_daemon(gateway_workers=2) as daemon:
        address = read_control_file(daemon.state_dir)["listen"]["http"]
        token = admin_token_path(daemon.state_dir).read_text().strip()
        results["gateway_http"] = measure(f"http://{address}/mcp", token, clients, window,
                                          duration)
    results["ratio_gateway_http_to_bare"] = round(
        results["gateway_http"]["calls_per_s"]
        / max(1, results["bare_aiohttp"]["calls_per_s"]), 3)
    return results
