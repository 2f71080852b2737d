"""The official MCP SDKs as agents over HTTP: the Python SDK's Streamable HTTP client in
both eras, and the TypeScript SDK's StreamableHTTPClientTransport (node)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.gateway_helpers import TOKENS, gateway_config, listen
from tests.test_upstreams import upstreams

NODE_DIR = Path(__file__).parent / "node"
ERAS = ["legacy", "2026-07-28", "auto"]


def client(d: Any, mode: str, token: str | None = TOKENS["bob"]) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0))
    return Client(streamable_http_client(f"http://{listen(d)['http']}/mcp", http_client=http),
                  mode=mode, cache=None)


@pytest.fixture
def daemon(start_daemon):
    d = start_daemon(extra={**gateway_config(), **upstreams()})
    d.wait_ready(timeout=60)
    return d


@pytest.mark.parametrize("mode", ERAS)
def test_the_python_sdk_lists_calls_is_refused_and_sees_progress(daemon, mode):
    async def run() -> None:
        async with client(daemon, mode) as bob:
            assert bob.protocol_version == {"legacy": "2025-11-25"}.get(mode, "2026-07-28")
            names = [t.name for t in (await bob.list_tools()).tools]
            assert "echo" in names and "notes__steps" in names
            echoed = await bob.call_tool("echo", {"text": "hi"})
            assert echoed.content[0].text == '{"text":"hi"}' and not echoed.is_error
            seen: list[float] = []

            async def progress(value: float, total: float | None, message: str | None) -> None:
                seen.append(value)

            steps = await bob.call_tool("notes__steps", {"count": 3},
                                        progress_callback=progress)
            assert steps.content[0].text == "3 steps" and seen == [1, 2, 3]
        async with client(daemon, mode, TOKENS["alice"]) as alice:
            with pytest.raises(Exception) as refused:  # alice's roles hide sleep
                await alice.call_tool("sleep", {"seconds": 0})
            assert "Unknown tool" in str(refused.value)
    asyncio.run(run())


@pytest.mark.parametrize("mode", ERAS)
def test_the_python_sdk_without_a_token_is_refused(daemon, mode):
    async def run() -> None:
        with pytest.raises(Exception) as refused:
            async with client(daemon, mode, token=None) as anonymous:
                await anonymous.list_tools()
        assert "nauthenticated" in repr(refused.value) or "401" in repr(refused.value)
    asyncio.run(run())


def npm_install() -> str | None:
    """Install the TypeScript SDK into tests/node (once); the reason it cannot, or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node or npm is not installed"
    if (NODE_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        return None
    out = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"],
                         cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return f"npm install @modelcontextprotocol/sdk failed: {out.stderr.strip()[:300]}"
    return None


def test_the_typescript_sdk_lists_and_calls_over_streamable_http(daemon):
    reason = npm_install()
    if reason is not None:
        pytest.skip(reason)
    out = subprocess.run(["node", str(NODE_DIR / "client.mjs"),
                          f"http://{listen(daemon)['http']}/mcp"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "WA_TOKEN": TOKENS["bob"]})
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert "echo" in seen["tools"] and seen["echo"] == '{"text":"from node"}'
