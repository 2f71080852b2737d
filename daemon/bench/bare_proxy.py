"""A bare pass-through proxy, for `bench llm`'s reference column: one process, one
aiohttp server and one pooled aiohttp client; no authentication, plugins, audit or
supervision.  It is the least any gateway built on aiohttp pays (the server and client
the gateway uses), so its ratio to direct is a ceiling for the gateway's on the same
machine, measured in the same run.

``python -m daemon.bench.bare_proxy UPSTREAM_BASE_URL`` serves on a free port, prints
it, and stops when its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import uvloop
from aiohttp import web

PASSED = ("Authorization", "Content-Type")


async def serve(upstream: str) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    cookie_jar=aiohttp.DummyCookieJar())

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k in PASSED if (v := request.headers.get(k)) is not None}
        async with session.post(upstream + request.path, data=body,
                                headers=headers) as reply:
            kind = reply.headers.get("Content-Type", "application/json")
            if not kind.startswith("text/event-stream"):
                return web.Response(status=reply.status, body=await reply.read(),
                                    headers={"Content-Type": kind})
            out = web.StreamResponse(status=reply.status, headers={"Content-Type": kind})
            await out.prepare(request)
            async for chunk in reply.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    app = web.Application()
    app.router.add_post("/v1/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[attr-defined]
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()
    await session.close()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1].removesuffix("/v1")))
