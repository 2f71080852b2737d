"""Redirects are never followed by the gateway's outbound clients (the MCP HTTP upstream
client, the A2A peer client): a server that answers 307 to another host would otherwise
have the upstream's or the peer's headers (its key) and the call sent there.  Real local
aiohttp servers: one that redirects, one that records whatever reaches it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from daemon.a2a.peers import Peer, PeerClient, PeerFailure
from daemon.protocol.jsonrpc import RpcError
from daemon.tools.mcp_http import HttpMcpClient

SECRET = "upstream-secret-7f2c"
HEADERS = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}


@asynccontextmanager
async def serving(handler: Any) -> AsyncIterator[str]:
    """An aiohttp server on a free port answering every path with ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def redirect_elsewhere() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """(the redirecting server's URL, the headers of each request the other one got)."""
    reached: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        reached.append(dict(request.headers))
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    async with serving(record) as elsewhere:
        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(elsewhere + request.path)

        async with serving(redirect) as url:
            yield url, reached


def test_an_http_upstream_that_redirects_is_a_clear_error_and_its_headers_stay_home():
    async def scenario() -> None:
        async with redirect_elsewhere() as (url, reached):
            client = HttpMcpClient("web", url + "/mcp", HEADERS, timeout=5.0)
            try:
                with pytest.raises(RpcError) as caught:
                    await client.start()
            finally:
                await client.close()
            assert "HTTP 307 redirect to http://127.0.0.1:" in caught.value.message
            assert "not followed" in caught.value.message
            assert reached == []  # neither the key nor the call went to the other host
    asyncio.run(scenario())


@pytest.mark.parametrize("stream", [False, True])
def test_an_a2a_peer_that_redirects_is_a_peer_failure_and_its_headers_stay_home(stream):
    async def scenario() -> None:
        async with redirect_elsewhere() as (url, reached):
            client = PeerClient()
            peer = Peer("helper", url + "/a2a", 5.0, headers=HEADERS)
            try:
                with pytest.raises(PeerFailure, match="redirected \\(HTTP 307\\)"):
                    await client.post(peer, b'{"jsonrpc":"2.0","id":1,"method":'
                                            b'"message/send","params":{}}', "", stream)
            finally:
                await client.close()
            assert reached == []
    asyncio.run(scenario())
