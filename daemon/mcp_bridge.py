"""`workingagents mcp-bridge`: a stdio MCP server that forwards to the daemon.

Any standard MCP client (an IDE, Claude Desktop, the `mcp` SDK) launches it as a stdio
server.  Each line from stdin goes to the daemon's TCP shim with the caller's token added
to ``params._meta`` (so both the handshake and the stateless era authenticate); each line
from the daemon goes to stdout unchanged.  Logs go to stderr, as MCP's stdio transport
requires.  The bridge exits when either side closes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import orjson

from daemon.protocol.mcp import META_TOKEN

log = logging.getLogger("mcp-bridge")
LINE_LIMIT = 1 << 24


def with_token(line: bytes, token: str) -> bytes:
    """The same message, with the token in params._meta; non-JSON passes through as is
    (the daemon answers it with the right error)."""
    try:
        message: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return line
    params = message.get("params")
    if params is None:
        params = message["params"] = {}
    if not isinstance(params, dict):
        return line
    meta = params.get("_meta")
    if meta is None:
        meta = params["_meta"] = {}
    if isinstance(meta, dict):
        meta[META_TOKEN] = token
    return orjson.dumps(message)


async def bridge(host: str, port: int, token: str) -> int:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    daemon_in, daemon_out = await asyncio.open_connection(host, port, limit=LINE_LIMIT)

    async def upstream() -> None:
        while line := await stdin.readline():
            if line.strip():
                daemon_out.write(with_token(line.rstrip(b"\r\n"), token) + b"\n")
                await daemon_out.drain()
        daemon_out.close()

    async def downstream() -> None:
        out = sys.stdout.buffer
        while line := await daemon_in.readline():
            out.write(line)
            out.flush()

    tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if tasks[1] in done and not tasks[0].done():
        log.error("the daemon closed the connection")
        return 1
    return 0
